"""
Interpreter start-up cost of the rl_zoo3 hook: times ``python -c pass`` with ``sb3_reinflow_zoo.pth`` in
site-packages and with it moved aside (restored afterwards), alternating, and checks that start-up imports
neither torch nor rl_zoo3.

Usage: python benchmarks/benchmark_startup.py [--runs 40]
"""

import argparse
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

PTH = Path(sysconfig.get_paths()["purelib"]) / "sb3_reinflow_zoo.pth"


def time_once() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    if not PTH.is_file():
        sys.exit(f"{PTH} not found: install sb3_reinflow first (pip install -e .)")
    check = "import sys; print(sorted({'torch', 'rl_zoo3', 'sb3_reinflow'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.strip()
    print(f"modules imported at start-up with the hook: {loaded}")
    aside = PTH.with_suffix(".pth.aside")
    with_hook, without_hook = [], []
    try:
        for _ in range(args.runs):
            with_hook.append(time_once())
            PTH.rename(aside)
            without_hook.append(time_once())
            aside.rename(PTH)
    finally:
        if aside.exists():
            aside.rename(PTH)
    print(f"python -c pass, median of {args.runs}: with hook {1e3 * statistics.median(with_hook):.1f} ms, "
          f"without {1e3 * statistics.median(without_hook):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
