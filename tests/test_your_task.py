"""docs/your_task.md replayed: its commands are those of benchmarks/your_task.sh, its Python example writes a dataset
that pretraining reads, and (slow) the script runs end to end on a small MuJoCo task."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "your_task.md"
SCRIPT = ROOT / "benchmarks" / "your_task.sh"
SETTING = re.compile(r"^[A-Z_]+=")


def code_blocks(language: str) -> list[str]:
    """:return: the guide's fenced code blocks of ``language``, in order"""
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def commands(text: str) -> list[str]:
    """:return: the shell commands of ``text``: continuation lines joined, spaces collapsed, comments dropped"""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = (re.sub(r"\s+", " ", line).strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def script_settings() -> dict[str, str]:
    """:return: the script's sizes and their defaults (``X=${X:-default}``)"""
    return dict(re.findall(r"^([A-Z_]+)=\$\{[A-Z_]+:-\"?([^}\"]*)\"?\}$", SCRIPT.read_text(), flags=re.MULTILINE))


def test_the_guide_runs_exactly_the_commands_of_the_script():
    blocks = code_blocks("bash")
    settings, guide = blocks[0], [line for block in blocks[1:] for line in commands(block)]
    script = [line for line in commands(SCRIPT.read_text()) if not SETTING.match(line)]
    script = [line for line in script if line not in ("set -euo pipefail", 'mkdir -p "$OUT"')]
    assert guide == script
    guide_settings = dict(re.findall(r'([A-Z_]+)=("[^"]*"|\S+)', settings))
    for name, default in script_settings().items():
        if name != "PRETRAIN_EXTRA":
            assert guide_settings[name].strip('"') == default, name


def test_the_guides_own_demonstrations_example_writes_a_dataset_pretraining_reads(tmp_path, monkeypatch):
    from sb3_reinflow.common.data import load_reinflow_dataset

    (example,) = code_blocks("python")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(GUIDE), "exec"), {"__name__": "guide"})
    dataset, _ = load_reinflow_dataset(tmp_path / "runs" / "my_demos")
    assert len(dataset.traj_lengths) == 5
    assert int(dataset.traj_lengths.sum()) == len(dataset.states) == 5 * 200  # Pendulum-v1 episodes: 200 steps
    assert np.all(np.abs(dataset.actions) <= 1.0 + 1e-6)  # stored normalised to [-1, 1]


@pytest.mark.slow
def test_the_script_runs_end_to_end_on_a_small_task(tmp_path):
    """The whole guide on InvertedPendulum-v4 at a tiny size: every step writes what the next one reads."""
    sizes = dict(
        EXPERT_STEPS="300",
        N_TRANSITIONS="600",
        GRADIENT_STEPS="40",
        FINETUNE_CHUNKS="1024",
        EVAL_FREQ="512",
        EVAL_EPISODES="2",
        SEEDS="1 2",
        PRETRAIN_EXTRA="--eval-freq 0 --n-eval-episodes 1",
    )
    env = {**os.environ, **sizes, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    out = tmp_path / "run"
    done = subprocess.run(
        ["bash", str(SCRIPT), "InvertedPendulum-v4", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for seed_run in ("InvertedPendulum-v4_1", "InvertedPendulum-v4_2"):
        assert (out / "zoo" / "reinflow_ppo" / seed_run / "evaluations.npz").exists()
    assert list((out / "videos").glob("*.mp4"))
    rows = (out / "results.csv").read_text().splitlines()
    assert {row.split(",")[1] for row in rows[1:]} == {"start", "1", "2"}
    assert "calibration/deployed_return" in done.stdout
