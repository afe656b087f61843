"""Issue 35 item 5: one naming rule for shipped policies, a command that prints a policy file's settings, loss lines
without a progress bar, bars that respect a non-terminal output, model zips in evaluate_pretrained."""

import json
import subprocess
import sys

import gymnasium as gym
import pytest

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.data import load_reinflow_dataset, save_reinflow_dataset
from sb3_reinflow.common.progress import progress_bar_kwargs
from sb3_reinflow.pretrained import available_pretrained, pretrained_path, resolve_pretrained
from sb3_reinflow.pretraining.behavior_cloning import pretrain
from sb3_reinflow.pretraining.demonstrations import collect_demonstrations
from sb3_reinflow.tools import inspect_policy
from tests.test_pretrain import TINY, ScriptedController, chunked_env


def test_pretrained_path_takes_the_full_name_and_the_pair():
    full = pretrained_path("Hopper-v4_reflow")
    assert full.name == "Hopper-v4_reflow.safetensors" and full.is_file()
    assert pretrained_path("Hopper-v4", "reflow") == full == pretrained_path("Hopper-v4")
    assert resolve_pretrained("Hopper-v4_reflow") == full
    assert pretrained_path("Hopper-v4_reflow", "reflow") == full
    assert pretrained_path("Hopper-v4_shortcut").name == "Hopper-v4_shortcut.safetensors"
    assert pretrained_path("Hopper-v4", "shortcut") == pretrained_path("Hopper-v4_shortcut")
    for name in available_pretrained():
        assert pretrained_path(name) == resolve_pretrained(name)
    with pytest.raises(FileNotFoundError, match="Hopper-v4_reflow_shortcut"):
        pretrained_path("Hopper-v4_reflow", "shortcut")
    with pytest.raises(FileNotFoundError, match="available"):
        pretrained_path("NoSuchEnv-v0")


def test_inspect_policy_prints_settings_and_provenance(capsys):
    inspect_policy.main(["FrankaKitchen-v1_shortcut", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["env_id"] == "FrankaKitchen-v1"
    assert info["settings"]["obs_clip"] == 5.0 and info["settings"]["deterministic_mode"] == "mean"
    assert info["chunk_size"] == 4 and info["action_space"] == "Box(4, 9) float32"
    assert info["n_parameters"] > 0 and len(info["file_sha256"]) == 64
    inspect_policy.main(["Hopper-v4_reflow"])
    text = capsys.readouterr().out
    assert "env_id: Hopper-v4" in text and "min_noise_std: 0.1" in text and "format: sb3_reinflow.policy" in text


def test_inspect_policy_reads_a_saved_file_with_its_checksum(tmp_path, capsys):
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, policy_kwargs=dict(TINY, obs_clip=3.0))
    model.policy.save(tmp_path / "p.safetensors", env_id="Pendulum-v1")
    inspect_policy.main([str(tmp_path / "p.safetensors"), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["settings"]["obs_clip"] == 3.0 and len(info["tensors_sha256"]) == 64


def test_progress_bars_respect_a_non_terminal_output():
    assert progress_bar_kwargs(False)["disable"] is True
    assert progress_bar_kwargs(True)["disable"] is None  # tqdm: off when the output is not a terminal


def test_pretrain_without_a_bar_prints_loss_lines(tmp_path, capsys):
    raw = collect_demonstrations(ScriptedController(), gym.make("Pendulum-v1"), 200, progress_bar=False)
    save_reinflow_dataset(tmp_path, raw)
    dataset, stats = load_reinflow_dataset(tmp_path)
    model = ReinFlowPPO("MlpPolicy", chunked_env(), n_steps=16, batch_size=8, policy_kwargs=TINY, device="cpu")
    pretrain(model.policy, dataset, stats, n_gradient_steps=6, batch_size=16, progress_bar=False, log_interval=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"]
    assert all("loss" in line and "lr" in line for line in lines)


def test_evaluate_pretrained_takes_a_model_zip(tmp_path):
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, policy_kwargs=dict(TINY, n_flow_steps=2))
    model.save(tmp_path / "model.zip")
    command = [sys.executable, "-m", "sb3_reinflow.tools.evaluate_pretrained", "--checkpoint", str(tmp_path / "model.zip"),
               "--env", "Pendulum-v1", "--protocols", "medoid", "--n-episodes", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| medoid |" in result.stdout and "| 2 |" in result.stdout
