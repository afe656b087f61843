"""The command-line tools (sb3_reinflow.tools): inspect_policy, evaluate_pretrained (model zips, input ranges), the
pretraining tools' options tables, and progress bars that respect a non-terminal output."""

import argparse
import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import load_script
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.progress import progress_bar_kwargs
from sb3_reinflow.tools import inspect_policy
from tests.test_pretraining import TINY


def test_inspect_policy_prints_settings_and_provenance(capsys):
    inspect_policy.main(["FrankaKitchen-v1_shortcut", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["env_id"] == "FrankaKitchen-v1"
    assert info["settings"]["obs_clip"] == 5.0 and info["settings"]["deterministic_mode"] == "median"
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


def test_evaluate_pretrained_takes_a_model_zip(tmp_path):
    model = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, policy_kwargs=dict(TINY, n_flow_steps=2))
    model.save(tmp_path / "model.zip")
    command = [sys.executable, "-m", "sb3_reinflow.tools.evaluate_pretrained", "--checkpoint", str(tmp_path / "model.zip"),
               "--env", "Pendulum-v1", "--protocols", "medoid", "zero", "--n-episodes", "1",
               "--csv", str(tmp_path / "e.csv")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| medoid |" in result.stdout and "| 2 |" in result.stdout
    with open(tmp_path / "e.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["protocol"] for row in rows] == ["medoid", "zero"]  # the printed table's rows, as numbers
    printed = re.search(r"\| medoid \| (-?[\d.]+) \+-", result.stdout)[1]
    assert float(rows[0]["mean_return"]) == pytest.approx(float(printed), abs=0.5)  # printed rounded


# --------------------------------------------------------------------------------------------------------------
# ``python -m sb3_reinflow.tools.evaluate_pretrained --input-ranges``: how far the normalised observations leave the
# data's range.


class _Ramp(gym.Env):
    """Observations 0, 1, 2, ... in both dimensions; the second dimension is scaled by 10 below."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(2, self.t, np.float32), 0.0, self.t == 3, False, {}


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate_pretrained")


def test_the_largest_input_and_the_observations_beyond_two_are_counted(script):
    policy = SimpleNamespace(obs_offset=th.zeros(2), obs_scale=th.tensor([1.0, 10.0]))
    env = script._InputRanges(DummyVecEnv([_Ramp]), policy)
    env.reset()
    for _ in range(3):
        env.step(np.zeros((1, 1), np.float32))
    # observations 0, 1, 2, then the reset's 0 after the episode ends: the second dimension reads 0, 10, 20, 0
    np.testing.assert_allclose(env.largest, [2.0, 20.0])
    assert (env.n_observations, env.n_outside) == (4, 2)
    assert env.summary() == "20 (dim 1) | 2/4"


# --------------------------------------------------------------------------------------------------------------
# The options tables of docs/pretraining.md match the parsers of ``sb3_reinflow.tools.collect_demos`` and
# ``.pretrain``.


ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `(--[a-z0-9-]+)` \| ([^|]+) \|", re.MULTILINE)


def script_parser(name: str) -> argparse.ArgumentParser:
    spec = importlib.util.find_spec(f"sb3_reinflow.tools.{name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_parser()


def doc_table(script: str) -> dict[str, str]:
    """Option -> default cell of the table after the line "`python -m sb3_reinflow.tools.<script>`:" (docs/pretraining.md)."""
    text = (ROOT / "docs" / "pretraining.md").read_text()
    start = text.index(f"`python -m sb3_reinflow.tools.{script}`:\n")
    table = text[start:].split("\n\n")[1]
    return {option: cell.strip() for option, cell in ROW.findall(table)}


def required_options(parser: argparse.ArgumentParser) -> set[str]:
    """Options that must be given, alone or as one of a required mutually exclusive group."""
    required = {action.option_strings[0] for action in parser._actions if action.required}
    for group in parser._mutually_exclusive_groups:
        if group.required:
            required |= {action.option_strings[0] for action in group._group_actions}
    return required


def parse_default(cell: str) -> object:
    """A documented default: "required ...", "none", "on"/"off", a JSON-ish `{}`, a number or a word."""
    cell = cell.strip("`")
    if cell.startswith("required"):
        return "required"
    special = {"none": None, "on": True, "off": False, "{}": {}}
    if cell in special:
        return special[cell]
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return cell


@pytest.mark.parametrize("script", ["collect_demos", "pretrain"])
def test_doc_matches_parser(script: str) -> None:
    parser, documented = script_parser(script), doc_table(script)
    actions = {action.option_strings[0]: action for action in parser._actions if action.option_strings[0] != "-h"}
    assert set(documented) == set(actions), "docs/pretraining.md and --help list different options"
    required = required_options(parser)
    for option, action in actions.items():
        expected = "required" if option in required else action.default
        documented_default = parse_default(documented[option])
        if isinstance(documented_default, float):
            assert isinstance(expected, int | float) and documented_default == pytest.approx(expected), option
        else:
            assert documented_default == expected, option


def test_help_runs() -> None:
    help_text = script_parser("pretrain").format_help()
    assert "--n-gradient-steps" in help_text and "--no-progress-bar" in help_text


@pytest.mark.parametrize("name", ["Mish", "torch.nn.Mish", {"class": "torch.nn.Mish"}])
def test_policy_kwargs_option_names_classes_by_name(name):
    from torch import nn

    from sb3_reinflow.common.policy_json import policy_kwargs_from_json
    from sb3_reinflow.tools.pretrain import make_parser

    text = json.dumps({"velocity_activation_fn": name, "obs_clip": 5.0, "max_noise_std": {"float": "inf"}})
    parsed = policy_kwargs_from_json(text)
    assert parsed == {"velocity_activation_fn": nn.Mish, "obs_clip": 5.0, "max_noise_std": float("inf")}
    args = make_parser().parse_args(["--env", "Hopper-v4", "--data", "d", "--output", "p", "--policy-kwargs", text])
    assert args.policy_kwargs["velocity_activation_fn"] is nn.Mish


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"velocity_activation_fn": "Mesh"}, "'Mesh' is not a class this argument accepts"),
        ({"activation_fn": "AdamW"}, "torch.nn.Mish"),  # an optimizer is not an activation
        ({"optimizer_class": "Mish"}, "torch.optim.AdamW"),
        ({"activation_fn": "os.system"}, "name one of"),
    ],
)
def test_policy_kwargs_option_refuses_other_classes_with_the_accepted_names(kwargs, message):
    from sb3_reinflow.common.policy_json import policy_kwargs_from_json

    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        policy_kwargs_from_json(json.dumps(kwargs))


def test_policy_kwargs_option_explains_text_that_is_not_a_json_object():
    from sb3_reinflow.common.policy_json import policy_kwargs_from_json

    with pytest.raises(argparse.ArgumentTypeError, match="is not JSON"):
        policy_kwargs_from_json("{obs_clip: 5}")
    with pytest.raises(argparse.ArgumentTypeError, match="must be a JSON object"):
        policy_kwargs_from_json("[1, 2]")
