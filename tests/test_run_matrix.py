"""The results matrix runner (benchmarks/run_matrix.py): which runs it plans and the commands it builds."""

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def matrix():
    return load_script("run_matrix")


def test_runs_with_a_csv_are_skipped_unless_forced(matrix, tmp_path):
    only = ["Hopper-v4/reflow_K2"]
    planned = matrix.planned_runs(only, None, tmp_path, force=False)
    assert [run.name for run in planned] == ["Hopper-v4_reflow_K2_201", "Hopper-v4_reflow_K2_202", "Hopper-v4_reflow_K2_203"]
    (tmp_path / "Hopper-v4_reflow_K2_202.csv").write_text("env\n")
    assert [run.name for run in matrix.planned_runs(only, None, tmp_path, force=False)] == [
        "Hopper-v4_reflow_K2_201",
        "Hopper-v4_reflow_K2_203",
    ]
    assert len(matrix.planned_runs(only, None, tmp_path, force=True)) == 3


def test_commands_carry_the_configuration_and_the_seed(matrix, tmp_path):
    run = matrix.make_run("Hopper-v4", "shortcut_K1", 202, tmp_path)
    command = run.command
    assert command[command.index("--seeds") + 1] == "202"
    assert command[command.index("--output") + 1] == str(tmp_path / "Hopper-v4_shortcut_K1_202.csv")
    assert command[command.index("--episodes-folder") + 1] == str(tmp_path.parent / "episodes")
    zoo_args = command[command.index("--") + 1 :]
    assert zoo_args[:3] == [
        "-params",
        "pretrained_policy:'Hopper-v4_shortcut'",
        "policy_kwargs:dict(n_flow_steps=1, min_noise_std=0.1, max_noise_std=0.24)",
    ]
    ppo = matrix.make_run("Ant-v4", "ppo_scratch", 201, tmp_path).command
    assert ppo[ppo.index("--algo") + 1] == "ppo" and ppo[ppo.index("--n-timesteps") + 1] == "2000000"


def test_runs_save_a_checkpoint_every_100k_env_steps(matrix, tmp_path):
    # reinflow_ppo counts Ta=4 action chunks, PPO env steps: both save every 100,000 env steps
    for config, save_freq in (("reflow_K4", "25000"), ("ppo_scratch", "100000")):
        command = matrix.make_run("Ant-v4", config, 201, tmp_path).command
        zoo_args = command[command.index("--") + 1 :]
        assert zoo_args[zoo_args.index("--save-freq") + 1] == save_freq


def test_paper_hyperparameters_use_each_envs_learning_rates(matrix, tmp_path):
    walker = matrix.make_run("Walker2d-v4", "paper_hparams", 201, tmp_path).command
    hopper = matrix.make_run("Hopper-v4", "paper_hparams", 201, tmp_path).command
    assert "learning_rate:4e-4" in walker and "critic_warmup_iterations:5" in walker
    assert "learning_rate:4.5e-5" in hopper and "critic_warmup_iterations:0" in hopper
    with pytest.raises(ValueError, match="no paper learning rates for Ant-v4"):
        matrix.make_run("Ant-v4", "paper_hparams", 201, tmp_path)


def test_unknown_keys_name_the_known_configurations(matrix, tmp_path):
    with pytest.raises(ValueError, match="reflow_K4"):
        matrix.planned_runs(["Hopper-v4/reflow_K3"], None, tmp_path, force=False)


def test_a_forced_run_keeps_the_old_csv(matrix, tmp_path):
    csv = tmp_path / "Hopper-v4_reflow_K2_201.csv"
    csv.write_text("old rows\n")
    matrix.move_aside(csv)
    assert not csv.exists() and (tmp_path / "Hopper-v4_reflow_K2_201.csv.old").read_text() == "old rows\n"


def test_hopper_runs_say_which_entry_made_them(matrix, tmp_path):
    """The Hopper entry took consistency_coef 0.1: plain names reproduce the previous entry, *_consistency0.1 the new."""

    def params(env, config):
        command = matrix.make_run(env, config, 201, tmp_path).command
        zoo_args = command[command.index("--") + 1 :]
        return zoo_args[1 : zoo_args.index("--tensorboard-log")] if zoo_args[0] == "-params" else []

    assert params("Hopper-v4", "reflow_K4") == ["consistency_coef:0.0"]
    assert params("Hopper-v4", "shortcut_K1")[-1] == "consistency_coef:0.0"
    assert params("Hopper-v4", "reflow_K4_consistency0.1") == ["consistency_coef:0.1"]
    previous = params("Hopper-v4", "shortcut_K1")
    assert params("Hopper-v4", "shortcut_K1_consistency0.1") == [*previous[:-1], "consistency_coef:0.1"]
    assert params("Walker2d-v4", "reflow_K4") == []  # other entries are unchanged
    assert "consistency_coef:0.0" in params("Walker2d-v4", "paper_hparams")  # ReinFlow has no such term
    assert set(matrix.FRESH_SEEDS).isdisjoint(matrix.HELD_OUT_SEEDS)
