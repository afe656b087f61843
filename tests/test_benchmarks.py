"""The scripts of benchmarks/: the results page generator (build_results_page.py), the results matrix runner, the
per-episode breakdown and the fine-tuning benchmark's CSV writer."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

pd = pytest.importorskip("pandas")
stats = pytest.importorskip("scipy.stats")

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = "env,config,seed,timesteps,env_steps,wall_clock_s,protocol,deployed,mean_return,std_return,success_rate"


@pytest.fixture(scope="module")
def page_builder():
    return load_script("build_results_page")


def test_the_committed_page_has_every_generated_region(page_builder):
    page = (ROOT / "docs" / "finetuning.md").read_text()
    for name in ("matrix", "configurations", "kitchen"):
        assert page.count(f"<!-- begin:{name} -->") == 1 and page.count(f"<!-- end:{name} -->") == 1
        assert page.index(f"<!-- begin:{name} -->") < page.index(f"<!-- end:{name} -->")


def test_replace_region_keeps_the_text_around_it(page_builder):
    page = "intro\n<!-- begin:kitchen -->\nold\ntable\n<!-- end:kitchen -->\noutro\n"
    expected = "intro\n<!-- begin:kitchen -->\nnew\n<!-- end:kitchen -->\noutro\n"
    assert page_builder.replace_region(page, "kitchen", "new") == expected
    with pytest.raises(ValueError, match="region 'matrix' not found"):
        page_builder.replace_region(page, "matrix", "new")


def test_runs_are_grouped_by_env_and_configuration(page_builder, tmp_path):
    names = ["Hopper-v4_reflow_K4_201", "Hopper-v4_reflow_K4_202", "Hopper-v4_reflow_K4_consistency0.1_101"]
    files = [tmp_path / f"{name}.csv" for name in names]
    groups = page_builder.group_runs(files)
    assert groups == {("Hopper-v4", "reflow_K4"): files[:2], ("Hopper-v4", "reflow_K4_consistency0.1"): files[2:]}


def _kitchen_rows(config: str, seed: int, evaluations: list[tuple[int, int, float, float]], episodes: str = "") -> list[str]:
    """CSV lines of one kitchen run: (timesteps, env steps, subtasks, success) per evaluation, every protocol."""
    return [
        f"FrankaKitchen-v1,{config},{seed},{timesteps},{steps},1.0,{protocol},False,{subtasks},0.5,{success},{episodes}"
        for timesteps, steps, subtasks, success in evaluations
        for protocol in ("mean", "median", "medoid", "zero", "random", "stochastic")
    ]


def test_kitchen_tables_have_a_row_per_seed_and_protocol_and_a_column_per_evaluation(page_builder, tmp_path):
    # the two seeds' env steps differ a little at the same zoo timestep (an episode's last chunk may stop early)
    csvs = []
    for seed, steps in ((201, 100_212), (202, 100_480)):
        lines = _kitchen_rows("shortcut_K4_rollout4k", seed, [(0, 0, 3.05, 0.5), (25_000, steps, 2.1, 0.0)], "20")
        csvs.append(tmp_path / f"FrankaKitchen-v1_shortcut_K4_rollout4k_{seed}.csv")
        csvs[-1].write_text("\n".join([COLUMNS + ",n_episodes", *lines]) + "\n")
    old = _kitchen_rows("shortcut_K4", 202, [(0, 0, 1.4, 0.0), (6_250, 25_000, 2.1, 0.1)])
    csvs.append(tmp_path / "FrankaKitchen-v1_shortcut_K4_202.csv")
    csvs[-1].write_text("\n".join([COLUMNS, *(line.rstrip(",") for line in old)]) + "\n")
    lines = page_builder.kitchen_region(page_builder.group_runs(csvs)).splitlines()
    assert lines[0].startswith("**the entry's 4,000-chunk rollouts")  # the reporting configuration first
    assert lines[2] == "| seed | protocol | 0k | 100k |"
    assert lines[4] == "| 201 | mean | 3.05 (50%) | 2.10 |"
    assert sum(line.startswith("| 20") for line in lines) == 3 * 6
    assert "Episodes per evaluation and protocol: seed 201: 20, seed 202: 20." in lines
    assert "| 202 | mean | 1.40 | 2.10 (10%) |" in lines
    assert "Episodes per evaluation and protocol: seed 202: 10." in lines  # a CSV without the column: 10


def test_an_empty_region_is_filled_and_a_folder_without_kitchen_runs_builds(page_builder, tmp_path):
    page = "<!-- begin:kitchen -->\n<!-- end:kitchen -->\n"
    assert page_builder.replace_region(page, "kitchen", "table") == "<!-- begin:kitchen -->\ntable\n<!-- end:kitchen -->\n"
    csv = tmp_path / "Hopper-v4_reflow_K4_201.csv"
    assert page_builder.kitchen_region(page_builder.group_runs([csv, tmp_path / "notes.csv"])) == "(no kitchen runs yet)"


def _two_protocols(deployed: tuple[float, float], stochastic: tuple[float, float]) -> "pd.DataFrame":
    rows = [
        dict(env_steps=600_000, protocol="mean", mean_return=deployed[0], std_return=deployed[1]),
        dict(env_steps=600_000, protocol="stochastic", mean_return=stochastic[0], std_return=stochastic[1]),
        # before 0.5M env steps: never counted
        dict(env_steps=100_000, protocol="mean", mean_return=10.0, std_return=1.0),
        dict(env_steps=100_000, protocol="stochastic", mean_return=3000.0, std_return=1.0),
    ]
    return pd.DataFrame(rows)


def test_episode_counts_come_from_the_csv_and_default_to_ten():
    curves = load_script("plot_learning_curves")
    assert curves.episodes_of(pd.DataFrame({"mean_return": [1.0]})) == 10
    assert curves.episodes_of(pd.DataFrame({"n_episodes": [float("nan")]})) == 10
    assert curves.episodes_of(pd.DataFrame({"n_episodes": [20, 20]})) == 20
    with pytest.raises(ValueError, match=r"different episode counts \[10, 20\]"):
        curves.episodes_of(pd.DataFrame({"n_episodes": [10, 20]}))


def test_ratio_shortfall_counts_only_gaps_beyond_evaluation_noise():
    curves = load_script("plot_learning_curves")
    # far below 0.95 with tight evaluations: t = (2000 - 2850) / sqrt((100^2 + 95^2) / 9) = -18.5 (numpy stds, ddof=0)
    assert curves.ratio_shortfalls(_two_protocols((2000, 100), (3000, 100)), "mean") == (1, 1)
    # the Shortcut K=1 evaluation at 0.7M (ratio 0.82, spreads 705 and 832): t = -0.99, p = 0.17, within noise
    assert curves.ratio_shortfalls(_two_protocols((2281, 705), (2769, 832)), "mean") == (0, 1)
    # above 0.95 x stochastic: never a shortfall, however tight
    assert curves.ratio_shortfalls(_two_protocols((2900, 1), (3000, 1)), "mean") == (0, 1)
    # with 100 episodes the same 0.82 gap is significant
    assert curves.ratio_shortfalls(_two_protocols((2281, 705), (2769, 832)), "mean", n_episodes=100) == (1, 1)
    # two evaluations without spread (e.g. whole-number kitchen returns): the gap itself decides
    assert curves.ratio_shortfalls(_two_protocols((2, 0), (4, 0)), "mean") == (1, 1)
    assert curves.ratio_shortfalls(_two_protocols((4, 0), (4, 0)), "mean") == (0, 1)
    # no stochastic evaluation (a Gaussian PPO baseline): nothing compared
    no_stochastic = _two_protocols((2, 0), (4, 0))
    assert curves.ratio_shortfalls(no_stochastic[no_stochastic.protocol != "stochastic"], "mean") == (0, 0)


def test_holm_correction_steps_down_from_the_smallest_p_value():
    curves = load_script("plot_learning_curves")
    # m = 4 at alpha 0.05: thresholds 0.0125, 0.01667, 0.025, 0.05 for the sorted p-values
    assert curves.holm_rejections(np.array([0.01, 0.04, 0.03, 0.005])) == 2  # 0.005 < 0.0125, 0.01 < 0.0167, 0.03 > 0.025
    assert curves.holm_rejections(np.array([0.001, 0.002, 0.003, 0.004])) == 4
    # step-down, not Bonferroni: after rejecting 0.01 < 0.025, 0.04 is compared with 0.05 / 1 (Bonferroni: 0.025)
    assert curves.holm_rejections(np.array([0.01, 0.04])) == 2
    # one p-value of 0.004 passes alone but not among 31 tests (0.05 / 31 = 0.0016)
    assert curves.holm_rejections(np.array([0.004])) == 1
    assert curves.holm_rejections(np.array([0.004] + [0.5] * 30)) == 0
    # stops at the first failure even if a later, larger threshold would pass
    assert curves.holm_rejections(np.array([0.03, 0.04])) == 0  # 0.03 > 0.025, though 0.04 < 0.05
    assert curves.holm_rejections(np.empty(0)) == 0


def test_shortfall_pvalues_match_a_hand_computed_welch_test():
    curves = load_script("plot_learning_curves")
    # Shortcut K=1 seed 203 at 1.65M: 1770 +- 1083 against 3211 +- 582 (numpy stds over 10 episodes)
    pvalues = curves.shortfall_pvalues(_two_protocols((1770, 1083), (3211, 582)), "mean")
    var_d, var_s = 1083**2 / 9, (0.95 * 582) ** 2 / 9
    t = (1770 - 0.95 * 3211) / np.sqrt(var_d + var_s)
    dof = (var_d + var_s) ** 2 / ((var_d**2 + var_s**2) / 9)
    assert pvalues.shape == (1,)
    assert pvalues[0] == pytest.approx(stats.t.cdf(t, dof), rel=1e-12)
    assert 0.001 < pvalues[0] < 0.05  # significant alone at 5%
    assert curves.ratio_shortfalls(_two_protocols((1770, 1083), (3211, 582)), "mean") == (1, 1)


def test_committed_runs_have_one_row_per_evaluation():
    for path in sorted((ROOT / "docs" / "results" / "runs").glob("*.csv")):
        table = pd.read_csv(path)
        repeated = table.duplicated(["env", "config", "seed", "timesteps", "protocol"])
        assert not repeated.any(), f"{path.name}: {int(repeated.sum())} evaluations recorded twice"


def test_seeds_column_marks_tuning_seeds_and_runs_short_of_the_budget():
    matrix = load_script("results_matrix")
    full = pd.DataFrame({"env_steps": [0, 1_000_000, 1_996_800]})
    stopped = pd.DataFrame({"env_steps": [0, 50_000, 650_000]})
    assert matrix.seed_label(201, full, tuning_seeds=set()) == "201"
    assert matrix.seed_label(101, full, tuning_seeds={101}) == "101*"
    assert matrix.seed_label(202, stopped, tuning_seeds=set()) == "202 (to 0.65M)"
    assert matrix.seed_label(101, stopped, tuning_seeds={101}) == "101* (to 0.65M)"


def test_seeds_above_start_counts_runs_not_words_of_the_seeds_column(capsys):
    """A run stopped before the budget is labelled "202 (to 0.2M)": still one seed in "seeds above start"."""
    matrix = load_script("results_matrix")
    rows = [
        dict(
            env="Hopper-v4",
            config="c",
            seed=202,
            timesteps=t,
            env_steps=t,
            wall_clock_s=60.0 * t / 50_000,
            protocol=protocol,
            deployed=protocol == "mean",
            mean_return=value,
            std_return=1.0,
            success_rate=None,
        )
        for t, start_or_end in ((0, 1000.0), (100_000, 1500.0), (200_000, 1600.0))
        for protocol, value in (("mean", start_or_end), ("stochastic", start_or_end))
    ]
    row = matrix.summarize(pd.DataFrame(rows), tuning_seeds=set())
    assert row.seeds == "202 (to 0.2M)" and row.n_seeds == 1 and row.above_start == 1
    matrix.print_table([row])
    assert "| 1/1 |" in capsys.readouterr().out


def test_milestone_values_neither_invent_a_start_nor_drop_a_last_evaluation_a_chunk_short():
    curves = load_script("plot_learning_curves")
    # a from-scratch run evaluates first at 50k: it has no step-0 value
    scratch = pd.DataFrame(dict(env_steps=[50_000, 100_000], mean_return=[200.0, 400.0]))
    assert np.isnan(curves.value_at(scratch, 0))
    assert curves.value_at(scratch, 75_000) == pytest.approx(300.0)
    # a run whose last evaluation is at 1,996,800 env steps reads it at 2M; one that stopped at 1.6M does not
    ended = pd.DataFrame(dict(env_steps=[1_500_000, 1_996_800], mean_return=[3000.0, 3400.0]))
    assert curves.value_at(ended, 2_000_000) == pytest.approx(3400.0)
    stopped = pd.DataFrame(dict(env_steps=[1_500_000, 1_600_000], mean_return=[3000.0, 3400.0]))
    assert np.isnan(curves.value_at(stopped, 2_000_000))


def test_a_protocol_evaluated_only_at_milestones_has_its_final_at_the_runs_end():
    curves = load_script("plot_learning_curves")
    steps = [1_500_000, 1_900_000, 1_950_000, 2_000_000]
    every = pd.DataFrame(dict(env_steps=steps, protocol="mean", mean_return=[1.0, 2.0, 3.0, 4.0]))
    milestones = pd.DataFrame(dict(env_steps=[1_500_000, 2_000_000], protocol="zero", mean_return=[10.0, 40.0]))
    run = pd.concat([every, milestones])
    assert curves.final_return(every, run) == pytest.approx(3.0)  # 1.9M, 1.95M, 2M
    # the 1.5M milestone is not among the run's last three evaluations: the final is the 2M one, not (10 + 40) / 2
    assert curves.final_return(milestones, run) == pytest.approx(40.0)
    assert curves.final_return(milestones) == pytest.approx(25.0)  # without the run: its own last three
    assert np.isnan(curves.final_return(milestones[milestones["env_steps"] < 2_000_000], run))


def test_runs_stopped_early_are_left_out_of_the_aggregates_and_named(capsys):
    curves = load_script("plot_learning_curves")
    rows = [
        dict(env="Hopper-v4", config="c", seed=seed, env_steps=t, protocol="mean", mean_return=value)
        for seed, last, value in ((101, 1_300_000, 100.0), (201, 2_000_000, 3000.0), (202, 1_996_800, 3500.0))
        for t in (0, last // 2, last)
    ]
    data = pd.DataFrame(rows)
    assert curves.stopped_runs(data) == {101: 1_300_000}
    curves.aggregate_table(data, tuning_seeds={101})
    out = capsys.readouterr().out
    assert "| all | mean | 2 |" in out and "| held out | mean | 2 |" in out  # 101's 1.3M "final" is not pooled
    assert "seed 101 (stopped at 1.3M)" in out


def test_notes_for_one_env_come_before_notes_for_every_env(page_builder):
    experiments = {"c": "every env", "Walker2d-v4/c": "Walker2d only"}
    assert page_builder.note_of(experiments, "Walker2d-v4", "c") == "Walker2d only"
    assert page_builder.note_of(experiments, "Hopper-v4", "c") == "every env"
    assert page_builder.note_of(experiments, "Hopper-v4", "other") is None
    # the adopted Hopper entry is in the matrix; the same override on Walker2d stays an experiment
    assert page_builder.note_of(page_builder.EXPERIMENTS, "Hopper-v4", "reflow_K4_consistency0.1") is None
    assert page_builder.note_of(page_builder.EXPERIMENTS, "Walker2d-v4", "reflow_K4_consistency0.1") is not None


# --------------------------------------------------------------------------------------------------------------
# The results matrix runner (benchmarks/run_matrix.py): which runs it plans and the commands it builds.


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
    assert Path(command[1]).is_file(), command[1]  # the script each run calls exists
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


def test_humanoid_ppo_runs_read_the_uncommented_rl_zoo3_entry(matrix, tmp_path):
    import yaml

    ppo = matrix.make_run("Humanoid-v4", "ppo_scratch", 201, tmp_path, tmp_path / "work").command
    conf = Path(ppo[ppo.index("-conf") + 1])
    assert yaml.safe_load(conf.read_text())["Humanoid-v4"] == {"normalize": True, "n_timesteps": 2e6, "policy": "MlpPolicy"}
    assert ppo[ppo.index("--folder") + 1] == str(tmp_path / "work")
    assert ppo[ppo.index("--n-timesteps") + 1] == "2000000"
    flow = matrix.make_run("Humanoid-v4", "reflow_K4", 201, tmp_path).command  # Ta=1: timesteps are env steps
    assert (flow[flow.index("--n-timesteps") + 1], flow[flow.index("--eval-freq") + 1]) == ("2000000", "50000")
    assert "-conf" not in matrix.make_run("Ant-v4", "ppo_scratch", 201, tmp_path).command


def test_an_interrupted_run_is_found_and_a_finished_one_is_not(tmp_path):
    import json

    benchmark = load_script("benchmark_finetune")
    for name, done in (("Humanoid-v4_1", 500), ("Humanoid-v4_2", 120)):
        (tmp_path / "reinflow_ppo" / name / "resume").mkdir(parents=True)
        progress = {"format": "sb3_reinflow.resume", "format_version": 1, "num_timesteps": done, "total_timesteps": 500}
        (tmp_path / "reinflow_ppo" / name / "resume" / "progress.json").write_text(json.dumps(progress))
    assert benchmark.unfinished_run(tmp_path, "reinflow_ppo", "Humanoid-v4") == tmp_path / "reinflow_ppo" / "Humanoid-v4_2"
    assert benchmark.unfinished_run(tmp_path, "reinflow_ppo", "Hopper-v4") is None
    # a run caught between the two renames of a checkpoint write is found from its complete new checkpoint
    run = tmp_path / "reinflow_ppo" / "Humanoid-v4_2"
    (run / "resume").rename(run / ".resume.new")
    assert benchmark.unfinished_run(tmp_path, "reinflow_ppo", "Humanoid-v4") == run


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


# --------------------------------------------------------------------------------------------------------------
# The per-episode breakdown script (benchmarks/episode_breakdown.py): its counts on hand-made episodes.


@pytest.fixture(scope="module")
def breakdown():
    return load_script("episode_breakdown")


def test_counts_low_and_early_episodes(breakdown):
    returns = np.array([5000.0, 4900.0, 113.0, 2300.0, 4800.0])
    lengths = np.array([1000, 1000, 39, 1000, 1000])
    stats = breakdown.episode_stats(returns, lengths, low_return=4000, time_limit=1000)
    assert stats.n_episodes == 5
    assert stats.n_low == 2  # 113 and 2300
    assert stats.n_early == 1  # only the 39-step episode was cut short
    assert stats.median == 4800.0
    assert stats.mean == pytest.approx(returns.mean())
    assert stats.mean_high == pytest.approx(4900.0)


def test_mismatched_inputs_are_refused(breakdown):
    with pytest.raises(ValueError, match="as many returns as lengths"):
        breakdown.episode_stats(np.ones(3), np.ones(2), low_return=0, time_limit=10)


def test_windows_split_the_run_in_order(breakdown, tmp_path):
    path = tmp_path / "evaluations.npz"
    timesteps = np.arange(1, 9) * 12_500
    results = np.full((8, 3), 5000.0)
    results[-1, 0] = 100.0  # one failed episode in the last evaluation
    lengths = np.full((8, 3), 1000)
    lengths[-1, 0] = 50
    np.savez(path, timesteps=timesteps, results=results, ep_lengths=lengths)
    rows = breakdown.window_stats(path, n_windows=2, low_return=4000, time_limit=1000, steps_per_timestep=4)
    assert [span for span, _ in rows] == ["0.05M-0.2M", "0.25M-0.4M"]
    assert [(stats.n_episodes, stats.n_low, stats.n_early) for _, stats in rows] == [(12, 0, 0), (12, 1, 1)]
    with pytest.raises(ValueError, match="fewer than --windows"):
        breakdown.window_stats(path, n_windows=9, low_return=4000, time_limit=1000)


def test_protocols_are_the_packages(breakdown):
    from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS

    assert breakdown.PROTOCOLS == EVAL_PROTOCOLS


# --------------------------------------------------------------------------------------------------------------
# The fine-tuning benchmark's CSV writer (benchmarks/benchmark_finetune.py).


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark_finetune")


def rows(benchmark, seed: int, returns: list[float]) -> list[dict]:
    base = dict.fromkeys(benchmark.FIELDS)
    base.update(env="Hopper-v4", config="reflow_K4", seed=seed, protocol="mean", deployed=True, std_return=0.0)
    return [
        base | {"timesteps": 50_000 * (i + 1), "env_steps": 50_000 * (i + 1), "mean_return": r} for i, r in enumerate(returns)
    ]


def test_seeds_are_appended_and_a_rerecorded_run_replaces_its_rows(benchmark, tmp_path):
    output = tmp_path / "runs.csv"
    benchmark.append_rows(output, rows(benchmark, 201, [1.0, 2.0]))
    benchmark.append_rows(output, rows(benchmark, 202, [3.0, 4.0]))
    benchmark.append_rows(output, rows(benchmark, 201, [5.0, 6.0, 7.0]))
    table = pd.read_csv(output)
    assert list(table.columns) == benchmark.FIELDS
    assert table.groupby("seed")["mean_return"].apply(list).to_dict() == {201: [5.0, 6.0, 7.0], 202: [3.0, 4.0]}
    assert not list(tmp_path.glob("*.tmp*")), "the atomic write left a temporary file behind"


def test_a_runs_per_episode_evaluations_are_kept(benchmark, tmp_path):
    np = pytest.importorskip("numpy")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = np.arange(6.0).reshape(2, 3)
    np.savez(run_dir / "evaluations.npz", timesteps=np.array([10, 20]), results=results, ep_lengths=np.ones((2, 3)))
    kept = benchmark.keep_episodes(run_dir, tmp_path / "episodes", "Hopper-v4_reflow_K4_201")
    assert kept == tmp_path / "episodes" / "Hopper-v4_reflow_K4_201.npz"
    with np.load(kept) as data:
        np.testing.assert_array_equal(data["results"], results)
    assert not list((tmp_path / "episodes").glob("*.tmp*")), "the atomic write left a temporary file behind"


def test_deployed_against_best_compares_on_the_seeds_where_both_were_recorded(tmp_path):
    compare = load_script("deployed_vs_best").compare
    header = "env,config,seed,timesteps,env_steps,wall_clock_s,protocol,deployed,mean_return,std_return,success_rate\n"
    rows = {  # seed -> (protocol, deployed, score) at the last evaluation; median recorded on seed 2 only
        1: [("mean", True, 90.0), ("zero", False, 100.0)],
        2: [("mean", True, 70.0), ("zero", False, 60.0), ("median", False, 200.0), ("stochastic", False, 900.0)],
    }
    for seed, protocols in rows.items():
        lines = [f"E,c,{seed},0,0,0,mean,True,1.0,0,\n"]
        lines += [f"E,c,{seed},10,40,0,{name},{deployed},{score},0,\n" for name, deployed, score in protocols]
        (tmp_path / f"E_c_{seed}.csv").write_text(header + "".join(lines))
    row = compare("E", "c", (1, 2, 3), tmp_path, "final")
    # median beats mean by 130 on seed 2; zero by 0 on average over seeds 1-2; stochastic is no candidate
    assert (row["best"], row["n_seeds"], row["deployed_score"], row["ratio"]) == ("median", 1, 70.0, 0.35)
    assert row["within_5pct"] is False
    assert compare("E", "c", (1, 2), tmp_path, "start")["ratio"] == 1.0
    # the rule's mode is compared on the same evaluations; a mode the runs never recorded has no score
    rule = compare("E", "c", (1, 2), tmp_path, "final", deployed="zero")
    assert (rule["deployed_by"], rule["deployed"], rule["best"], rule["deployed_score"]) == ("rule", "zero", "median", 60.0)
    assert rule["ratio"] == round(60 / 200, 3)
    assert "ratio" not in compare("E", "c", (1, 2), tmp_path, "final", deployed="medoid")


def test_deployed_against_best_reads_the_kitchen_reporting_runs_and_writes_subtasks_to_two_decimals(tmp_path):
    script = load_script("deployed_vs_best")
    lines = [f"FrankaKitchen-v1,shortcut_K4_rollout4k,201,{t},{4 * t},0,{name},{name == 'median'},{score},0,\n"
             for t in (0, 250_000) for name, score in (("median", 2.85), ("zero", 2.6))]  # fmt: skip
    (tmp_path / "FrankaKitchen-v1_shortcut_K4_rollout4k_201.csv").write_text(COLUMNS + "\n" + "".join(lines))
    rows = script.comparison(tmp_path)
    assert [(row["env"], row["when"], row["deployed"], row["best"]) for row in rows] == [
        ("FrankaKitchen-v1", "start", "median", "median"),
        ("FrankaKitchen-v1", "final", "median", "median"),
    ]
    assert "| median 2.85 | median 2.85 | 1.000 | 1 |" in script.markdown(rows)


def test_deployed_mode_rule_builds_each_configurations_start_and_picks_the_best():
    rule = load_script("deployed_mode_rule")
    import yaml

    registry = yaml.safe_load(rule.REGISTRY.read_text())
    checkpoint, kwargs = rule.start_settings("Hopper-v4", "shortcut_K1", registry)
    assert (checkpoint, kwargs["n_flow_steps"]) == ("Hopper-v4_shortcut", 1)
    assert rule.start_settings("Ant-v4", "reflow_K4", registry) == ("Ant-v4_reflow", parse_entry(registry["Ant-v4"]))
    groups = rule.starts()
    # the consistency term changes training only: both configurations start from one measured policy
    assert ["reflow_K1_consistency0.1", "reflow_K1"] in groups.values()
    rows = [{"protocol": "mean", "mean_return": "5"}, {"protocol": "zero", "mean_return": "7"}]
    assert rule.choose(rows) == "zero"
    assert rule.choose([{"protocol": "zero", "mean_return": "7"}, {"protocol": "mean", "mean_return": "7"}]) == "mean"


def parse_entry(entry: dict) -> dict:
    from sb3_reinflow.zoo.literals import parse_kwargs_string

    return parse_kwargs_string(entry["policy_kwargs"])


def test_expert_curve_drops_the_episodes_a_restart_redid(tmp_path):
    expert = load_script("humanoid_expert")
    rows = [  # segment 1 logs up to 130 but checkpointed at 100; segment 2 restarts at 100; segment 3 exactly at 200
        (40, 1, 10.0), (90, 2, 20.0), (120, 3, 30.0), (130, 4, 40.0),
        (110, 5, 5.0), (150, 6, 15.0), (200, 7, 25.0),
        (230, 8, 4.0),
    ]  # fmt: skip
    lines = ["env_steps,return,length,wall_s_segment"] + [f"{s},{r},1,{w}" for s, r, w in rows]
    (tmp_path / "curve.csv").write_text("\n".join(lines) + "\n")
    curve = expert.read_curve(str(tmp_path))
    assert [(steps, ret) for steps, ret, _, _ in curve] == [(40, 1), (90, 2), (110, 5), (150, 6), (200, 7), (230, 8)]
    assert [wall for *_, wall in curve] == [10.0, 20.0, 25.0, 35.0, 45.0, 49.0]


@pytest.mark.parametrize("horizon", [1, 4, None])
def test_env_steps_per_timestep_come_from_the_runs_saved_wrapper(tmp_path, horizon):
    from collections import OrderedDict

    import yaml

    benchmark = load_script("benchmark_finetune")
    saved = OrderedDict(policy="MlpPolicy", gamma=0.99)
    if horizon is not None:
        saved["env_wrapper"] = [{"sb3_reinflow.common.wrappers.ActionChunkWrapper": {"horizon": horizon}}]
    (tmp_path / "Humanoid-v4").mkdir()
    (tmp_path / "Humanoid-v4" / "config.yml").write_text(yaml.dump(saved))  # as rl_zoo3 writes it
    assert benchmark.chunk_horizon(tmp_path, "Humanoid-v4") == (horizon or 1)


def test_weight_perturbation_moves_only_the_velocity_net_by_the_requested_fraction():
    import torch as th

    from sb3_reinflow import ReinFlowPPO

    script = load_script("weight_perturbation")
    policy = ReinFlowPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, device="cpu").policy
    before = {name: tensor.detach().clone() for name, tensor in policy.named_parameters()}
    change = script.perturbed(policy, 0.02, th.Generator().manual_seed(0))
    assert change["relative_change"] == pytest.approx(0.02, rel=1e-5)
    moved = {name for name, tensor in policy.named_parameters() if not th.equal(tensor, before[name])}
    assert moved and all(name.startswith(script.PREFIX) for name in moved)
    assert script.perturbed(policy, 0.0, th.Generator().manual_seed(0))["relative_change"] == 0.0


def test_pixel_results_leave_out_runs_short_of_their_length(tmp_path, capsys):
    import json
    from collections import OrderedDict

    import yaml

    pixel_results = load_script("pixel_results")
    for name, seed, done in (("PixelCan-v0_1", 201, 250_368), ("PixelCan-v0_2", 202, 90_112)):
        run = tmp_path / name
        (run / "PixelCan-v0").mkdir(parents=True)
        (run / "resume").mkdir()
        (run / "PixelCan-v0" / "args.yml").write_text(yaml.dump(OrderedDict(seed=seed)))  # as rl_zoo3 writes it
        progress = {"format": "sb3_reinflow.resume", "format_version": 1, "num_timesteps": done, "total_timesteps": 250_000}
        (run / "resume" / "progress.json").write_text(json.dumps(progress))
        np.savez(run / "evaluations.npz", timesteps=[31_250], successes=[[True, False]], deterministic_mode="random")
    rows = pixel_results.run_rows("PixelCan-v0", tmp_path)
    assert [(row["source"], row["env_steps"], row["success_rate"]) for row in rows] == [("201", 125_000, 0.5)]
    assert "left out" in (out := capsys.readouterr().out) and "PixelCan-v0_2: 90,112 of its 250,000 timesteps" in out
