"""
Speed of this checkout's ``sb3_reinflow`` against another commit's, measured with the same code
(``benchmarks/benchmark_throughput.py``'s timers) in alternating subprocesses, so that a shared, noisy machine affects
both sides alike: ``predict`` of one observation (K=1 and K=4, ``deterministic_mode`` "zero" and "mean"), sampling
(``policy.forward``) of 40 observations and ``evaluate_actions`` plus backward on 512 samples at K=4.

The other commit's package (the folder ``sb3_reinflow``) is exported with ``git archive`` into a temporary folder
and put first on ``PYTHONPATH``; nothing in the working tree changes.

Example:
    python benchmarks/compare_commits.py --base HEAD~1 --repeats 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(calls: int) -> dict[str, float]:
    """
    Latencies (ms, medians over ``calls``) of the ``sb3_reinflow`` imported first; run in a subprocess.

    :param calls: timed calls per measurement
    """
    import torch as th

    from benchmark_throughput import evaluate_backward_s, make_flow_model, predict_latency, sampling_latency

    th.manual_seed(0)
    result = {}
    for n_flow_steps in (1, 4):
        model = make_flow_model(n_flow_steps)
        for mode in ("zero", "mean"):
            result[f"predict, K={n_flow_steps}, mode {mode}"] = predict_latency(model, mode, calls).median_ms
    model = make_flow_model(4)
    result["sampling of 40 observations, K=4"] = sampling_latency(model, 40, calls).median_ms
    result["evaluate_actions + backward, 512 samples, K=4"] = evaluate_backward_s(model, 512, max(calls // 20, 5)) * 1e3
    return result


def export_commit(commit: str, folder: Path) -> None:
    """Write the package ``sb3_reinflow`` of ``commit`` into ``folder`` (``git archive``)."""
    archive = folder / "base.tar"
    command = ["git", "archive", "--format=tar", f"--output={archive}", commit, "sb3_reinflow"]
    subprocess.run(command, cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")


def run_side(package_root: Path, threads: int, calls: int) -> dict[str, float]:
    """:return: :func:`measure`'s result for the package under ``package_root``"""
    env = dict(os.environ, PYTHONPATH=str(package_root), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--measure", "--calls", str(calls)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare against (default HEAD~1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per latency measurement")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        import torch as th

        th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(measure(args.calls)))
        return
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be at least 1")
    runs: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as folder:
        export_commit(args.base, Path(folder))
        sides = [("base", Path(folder)), ("this", ROOT)]
        for repeat in range(args.repeats):
            for side, root in sides if repeat % 2 == 0 else sides[::-1]:  # ABBA: neither side always runs first
                runs[side].append(run_side(root, args.threads, args.calls))
            print(f"repeat {repeat + 1} of {args.repeats} done", file=sys.stderr, flush=True)
    print(f"\n{args.threads} thread(s), medians of {args.repeats} alternating runs (ms)\n")
    print(f"| | {args.base} | this checkout | speedup |\n|---|---|---|---|")
    for name in runs["base"][0]:
        base = statistics.median(run[name] for run in runs["base"])
        this = statistics.median(run[name] for run in runs["this"])
        print(f"| {name} | {base:.2f} | {this:.2f} | {base / this:.2f}x |")


if __name__ == "__main__":
    main()
