"""The documented pixel commands (docs/pixels.md, top) run in sequence at a tiny size on Lift: the demonstrations tool
writes a dataset folder, the pretraining tool clones a policy file from it, rl_zoo3 fine-tunes that file and records
a video of the result. Each step reads what the previous one wrote, through the command line only."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("robosuite")

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> str:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_documented_pixel_commands_make_data_pretrain_finetune_and_record(tmp_path):
    from sb3_reinflow.common.data import load_reinflow_dataset

    out = run("-m", "sb3_reinflow.envs.robosuite.demos", "--task", "Lift", "--episodes", "1", "--style", "perfect",
              "--out", "data/lift", cwd=tmp_path)  # fmt: skip
    # no terminal here: a progress line instead of a bar
    assert re.search(r"Lift demos: 1/1 episodes kept, expert success [01].00 over 1 episodes, [0-9.]+ min", out), out
    dataset, _ = load_reinflow_dataset(tmp_path / "data" / "lift")
    assert dataset.images.dtype == np.uint8 and dataset.images.shape[1:] == (84, 84, 3)
    run("-m", "sb3_reinflow.tools.pretrain", "--env", "PixelLift-v0", "--env-kwargs", '{"render_every": 4}',
        "--data", "data/lift", "--flow-model", "shortcut", "--n-flow-steps", "1", "--n-gradient-steps", "4",
        "--batch-size", "8", "--eval-freq", "0", "--n-eval-episodes", "1", "--output", "lift.safetensors",
        cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "lift.safetensors").exists()
    out = run("-m", "rl_zoo3.train", "--algo", "reinflow_ppo", "--env", "PixelLift-v0", "-params",
              "pretrained_policy:'lift.safetensors'", "n_steps:8", "batch_size:16", "n_epochs:1",
              "noise_calibration_episodes:1", "-n", "16", "-f", "logs", "--eval-freq", "-1", cwd=tmp_path)  # fmt: skip
    assert "calibration/" in out
    run_dir = tmp_path / "logs" / "reinflow_ppo" / "PixelLift-v0_1"
    assert (run_dir / "PixelLift-v0.zip").exists()
    run("-m", "rl_zoo3.record_video", "--algo", "reinflow_ppo", "--env", "PixelLift-v0", "-f", "logs", "-n", "8",
        cwd=tmp_path)  # fmt: skip
    assert list((run_dir / "videos").glob("*.mp4"))
