"""
Run Stable-Baselines3's own PPO tests against sb3_reinflow.

The tests are taken from the source distribution of the *installed* stable-baselines3 version on PyPI
(``pip download --no-binary :all: --no-deps stable-baselines3==<version>``) and cached; nothing of SB3's is
committed. The tests that build a PPO model run twice, with ``stable_baselines3.PPO`` replaced by each stand-in:

- ``reinflow_ppo``: ``ReinFlowPPO``;
- ``stock_ppo``: SB3's ``PPO`` with ``ReinFlowPolicy`` and a ``ChainRolloutBuffer`` (the README's recipe).

Failures are expected only when the error is one of the package's clear "not supported" errors, or when the test
is in the documented list of assumptions that do not hold for a flow policy (``tests/sb3_tests_plugin.py``,
docs/sb3_compat.md). The exit code is non-zero on any other failure.

Usage::

    python tests/run_sb3_tests.py                       # both stand-ins, all PPO-using test files
    python tests/run_sb3_tests.py --stand-ins stock_ppo --files test_run.py -- -x
"""

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

SCRIPTS_DIR = Path(__file__).resolve().parent
STAND_INS = ("reinflow_ppo", "stock_ppo")
OUTCOMES = ("passed", "failed", "unsupported", "assumption", "skipped")


class StandInRun(NamedTuple):
    """
    Results of SB3's tests with one stand-in.

    :param stand_in: the stand-in's name
    :param tests: per test id: outcome, whether it built a PPO model, and the reason of a failure or skip
    :param unused_assumptions: documented assumptions that no failing test matched (the test now passes or is
        not selected)
    :param returncode: pytest's exit code
    :param seconds: wall-clock time
    """

    stand_in: str
    tests: dict[str, dict]
    unused_assumptions: list[str]
    returncode: int
    seconds: float


def fetch_sb3_tests(version: str, cache_dir: Path) -> Path:
    """
    Download the stable-baselines3 source distribution and unpack its ``tests/`` and ``pyproject.toml``
    (pytest settings) into ``cache_dir/<version>``. Only these are unpacked, so the tests import the installed
    package, not the sdist's copy.

    :param version: the stable-baselines3 version
    :param cache_dir: cache folder
    :return: the folder holding ``tests/`` and ``pyproject.toml``
    """
    target = cache_dir / version
    if _is_complete(target):
        return target
    with tempfile.TemporaryDirectory() as download_dir:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
        subprocess.run([*pip, "--dest", download_dir, f"stable-baselines3=={version}"], check=True)
        archives = list(Path(download_dir).glob("*.tar.gz"))
        if len(archives) != 1:
            raise RuntimeError(f"expected one stable-baselines3 sdist in {download_dir}, got {archives}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_dir))
        _unpack_tests(archives[0], staging)
    try:
        staging.rename(target)
    except OSError:  # another run unpacked it meanwhile, or an incomplete copy is in the way
        if _is_complete(target):
            shutil.rmtree(staging)
        else:
            shutil.rmtree(target)
            staging.rename(target)
    return target


def _is_complete(folder: Path) -> bool:
    return (folder / "tests").is_dir() and (folder / "pyproject.toml").is_file()


def _unpack_tests(archive: Path, destination: Path) -> None:
    """Extract ``<root>/tests/*.py`` and ``<root>/pyproject.toml`` (regular files only) without the root folder."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 2 or ".." in parts:
                continue
            inner = Path(*parts[1:])
            if inner == Path("pyproject.toml") or (inner.parts[0] == "tests" and inner.suffix == ".py"):
                (destination / inner).parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                (destination / inner).write_bytes(source.read())


def ppo_test_files(tests_dir: Path) -> list[str]:
    """
    :param tests_dir: SB3's ``tests/`` folder
    :return: names of the test files that import PPO
    """
    pattern = re.compile(r"^from stable_baselines3 import .*\bPPO\b", re.MULTILINE)
    return sorted(path.name for path in tests_dir.glob("test_*.py") if pattern.search(path.read_text()))


def run_stand_in(stand_in: str, root: Path, files: list[str], pytest_args: list[str]) -> StandInRun:
    """
    Run SB3's tests in ``files`` with one stand-in.

    :param stand_in: ``"reinflow_ppo"`` or ``"stock_ppo"``
    :param root: folder holding SB3's ``tests/`` and ``pyproject.toml``
    :param files: test file names
    :param pytest_args: extra pytest arguments
    :return: the results
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        results_path = Path(handle.name)
    env = {
        **os.environ,
        "SB3_COMPAT_STAND_IN": stand_in,
        "SB3_COMPAT_RESULTS": str(results_path),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS_DIR), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "pytest", *[f"tests/{name}" for name in files], "-p", "sb3_tests_plugin"]
    command += ["-c", "pyproject.toml", "--rootdir", ".", "-p", "no:cacheprovider", "-m", "not expensive"]
    command += ["-q", "-rfE", "--tb=short"]
    print(f"\n=== {stand_in}: {' '.join(command[1:])}", flush=True)
    start = time.monotonic()
    returncode = subprocess.run([*command, *pytest_args], cwd=root, env=env, check=False).returncode
    seconds = time.monotonic() - start
    results = json.loads(results_path.read_text()) if results_path.stat().st_size else {}
    results_path.unlink()
    return StandInRun(stand_in, results.get("tests", {}), results.get("unused_assumptions", []), returncode, seconds)


def summarize(run: StandInRun) -> int:
    """
    Print per-file counts of the tests that built a PPO model, and every failure.

    :param run: the results of one stand-in
    :return: the number of unexpected failures
    """
    per_file: dict[str, Counter] = {}
    not_built = 0
    for nodeid, result in run.tests.items():
        if not result["built"] and result["outcome"] != "failed":
            not_built += 1
            continue
        per_file.setdefault(nodeid.split("::")[0], Counter())[result["outcome"]] += 1
    header = f"{'file':<38}" + "".join(f"{name:>12}" for name in OUTCOMES)
    print(f"\n{run.stand_in}: SB3 tests that build a PPO model ({run.seconds:.0f} s)\n{header}")
    total: Counter = Counter()
    for name, counts in sorted(per_file.items()):
        total.update(counts)
        print(f"{name:<38}" + "".join(f"{counts[outcome]:>12}" for outcome in OUTCOMES))
    print(f"{'total':<38}" + "".join(f"{total[outcome]:>12}" for outcome in OUTCOMES))
    print(f"({not_built} selected tests built no PPO model and are not counted)")
    reasons = Counter(result["reason"] for result in run.tests.values() if result["outcome"] in ("unsupported", "assumption"))
    for reason, count in reasons.most_common():
        print(f"expected x{count}: {reason}")
    for pattern in run.unused_assumptions:
        print(f"note: documented assumption {pattern!r} matched no failure in this run")
    failures = {nodeid: result for nodeid, result in run.tests.items() if result["outcome"] == "failed"}
    for nodeid, result in failures.items():
        print(f"UNEXPECTED FAILURE {nodeid}: {result['reason']}")
    if run.returncode not in (0, 1, 5) or (run.returncode == 1 and not failures):
        print(f"pytest exited with code {run.returncode}")
        return max(1, len(failures))
    return len(failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stand-ins", nargs="+", choices=STAND_INS, default=list(STAND_INS), help="stand-ins for PPO")
    parser.add_argument("--files", nargs="+", default=None, help="SB3 test files (default: all that import PPO)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sb3_reinflow_sb3_tests",
        help="where the downloaded tests are kept",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    version = importlib.metadata.version("stable_baselines3")
    root = fetch_sb3_tests(version, args.cache_dir)
    files = args.files or ppo_test_files(root / "tests")
    print(f"stable-baselines3 {version}: tests from {root}, files: {' '.join(files)}")
    start = time.monotonic()
    unexpected = sum(summarize(run_stand_in(name, root, files, args.pytest_args)) for name in args.stand_ins)
    print(f"\n{unexpected} unexpected failure(s); total time {time.monotonic() - start:.0f} s")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
