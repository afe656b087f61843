"""
Regenerate the generated parts of ``docs/finetuning.md`` from the CSVs in ``docs/results/runs/``.

Three regions of the page are generated, each between a pair of HTML comments (``<!-- begin:NAME -->`` and
``<!-- end:NAME -->``); the prose around them is written by hand and left as it is:

- ``matrix``: the results matrix table (``benchmarks/results_matrix.py``, figure ``docs/images/matrix.png``);
- ``configurations``: one section per env and configuration with its curves and per-seed tables
  (``benchmarks/plot_learning_curves.py``, figures ``docs/images/<env>_<config>.png``);
- ``kitchen``: the Franka Kitchen table, subtasks completed per protocol and evaluation.

CSV files are named ``<env>_<config>_<seed>.csv``. Configurations listed in ``EXPERIMENTS`` are remedy experiments
on tuning seeds: they get their own section but stay out of the matrix. The page is written atomically.

Example:
    python benchmarks/build_results_page.py
"""

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

from sb3_reinflow.common.reinflow.callbacks import EVAL_PROTOCOLS
from sb3_reinflow.common.save_util import atomic_write
from plot_learning_curves import episodes_of, stopped_runs

ROOT = Path(__file__).resolve().parent.parent
TUNING_SEEDS = ("101",)
# Remedy experiments: a section each, left out of the matrix; keyed "<env>/<config>" for one env, or "<config>" for all
EXPERIMENTS = {
    "reflow_K4_decay0.1": "remedy experiment, tuning seed",
    "reflow_K4_consistency1": "remedy experiment, tuning seed",
    "Walker2d-v4/reflow_K4_consistency0.1": "remedy experiment: tuning seed 101, stopped at 1.6M; held-out seeds 201-202",
    "reflow_K4_ent0": "remedy experiment, tuning seed, 1M env steps",
    "reflow_K4_ent0_bc0.1": "remedy experiment, tuning seed, 1M env steps",
    "reflow_K4_ent0_epochs1": "remedy experiment, tuning seed, 1M env steps",
    "reflow_K4_lr1.5e-5": "remedy experiment on the 1-epoch Ant entry, tuning seed, 1M env steps",
    "reflow_K4_warmup25": "remedy experiment on the 1-epoch Ant entry, tuning seed, 1M env steps",
    "reflow_K4_warmup25_lin": "remedy experiment on the 1-epoch Ant entry, tuning seed, stopped at 0.6M of 1M env steps",
    "reflow_K4_noise0.04": "remedy experiment on the 1-epoch Ant entry, tuning seed, 1M env steps",
    "reflow_K4_noise0.02": "remedy experiment on the 1-epoch Ant entry, tuning seed, 1M env steps",
    "reflow_K4_epochs1": "the Ant entry before the noise change: noise 0.08-0.16; held-out seeds",
    "reflow_K4_ent0.03": "the first Ant entry: ent_coef 0.03, 5 epochs; held-out seed, stopped at 1.6M",
}
# Matrix configurations whose runs used an earlier registry entry, or that are the current one under another name
NOTES = {
    "Hopper-v4/reflow_K4_consistency0.1": "the current Hopper entry: consistency_coef 0.1, adopted 2026-12-03 after "
    "held-out seeds 201-205 met every target; 206-208 fresh seeds; tuning seed 101 stopped at 1.3M",
    "Ant-v4/reflow_K4": "the current Ant entry; seeds 201-203 also ran the earlier entries, 206-208 are fresh",
    "Hopper-v4/reflow_K4": "the previous Hopper entry, without the consistency term (reproduce with "
    "-params consistency_coef:0.0)",
    **{
        f"Hopper-v4/{config}": "run with the previous Hopper entry, without the consistency term"
        for config in ("reflow_K2", "reflow_K1", "shortcut_K4", "shortcut_K1")
    },
    **{
        f"Hopper-v4/{config}_consistency0.1": "the current Hopper entry (consistency_coef 0.1), held-out seeds"
        for config in ("reflow_K2", "reflow_K1", "shortcut_K4", "shortcut_K1")
    },
}


def note_of(table: dict[str, str], env: str, config: str) -> str | None:
    """
    :param table: :data:`EXPERIMENTS` or :data:`NOTES`
    :param env: env id
    :param config: configuration label
    :return: the entry for this env and configuration (an ``<env>/<config>`` key first), or None
    """
    return table.get(f"{env}/{config}", table.get(config))


# Kitchen runs by configuration, in the kitchen tables; only the reporting configuration is in the matrix and has curves
KITCHEN_RUNS = {
    "shortcut_K4_rollout4k": "the entry's 4,000-chunk rollouts (reporting runs)",
    "shortcut_K4_rollout4k_nocal": "the reporting command with the noise calibration off (diagnostic)",
    "shortcut_K4_rollout4k_nocal_lr4.5e-6": "calibration off and the actor rate 10 times smaller (tuning seed)",
    "shortcut_K4": "800-chunk rollouts (the entry before 2026-12-07)",
    "shortcut_K4_actorlr0": "actor frozen (lr 0), before the evaluation fix",
    "shortcut_K4_noclip": "no obs_clip, evaluation fixed (stopped at 50k)",
}
KITCHEN_REPORTING = "shortcut_K4_rollout4k"
KITCHEN_ENV = "FrankaKitchen-v1"
PROTOCOLS = EVAL_PROTOCOLS
RUN_NAME = re.compile(r"(?P<env>[^_]+)_(?P<config>.+)_(?P<seed>\d+)")


def group_runs(csvs: list[Path]) -> dict[tuple[str, str], list[Path]]:
    """
    Group CSV files by (env, configuration), from names ``<env>_<config>_<seed>.csv``.

    :param csvs: the CSV files
    :return: the files of each (env, configuration)
    """
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for csv in csvs:
        match = RUN_NAME.fullmatch(csv.stem)
        if match is None:
            print(f"skipped {csv.name}: not named <env>_<config>_<seed>.csv", file=sys.stderr)
            continue
        groups[(match["env"], match["config"])].append(csv)
    return dict(sorted(groups.items()))


def run_script(script: str, *args: str) -> str:
    """
    Run one of the project's scripts and return what it printed, without its "wrote ..." lines.

    :param script: script file name in ``benchmarks/``
    :param args: its arguments
    :return: the printed text
    """
    out = subprocess.run(  # stderr is not captured: a failing script's traceback reaches the terminal
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("wrote ")).strip()


def matrix_region(groups: dict[tuple[str, str], list[Path]]) -> str:
    """
    The matrix table, and its figure written to ``docs/images/matrix.png``: every configuration but the remedy
    experiments and the kitchen diagnostics, without runs stopped short of their configuration's longest run.

    :param groups: the CSV files of each (env, configuration)
    :return: the table and its notes
    """
    files, notes = [], []
    for (env, config), group in groups.items():
        if note_of(EXPERIMENTS, env, config) is not None or (env == KITCHEN_ENV and config != KITCHEN_REPORTING):
            continue
        seeds = {csv: int(RUN_NAME.fullmatch(csv.stem)["seed"]) for csv in group}  # type: ignore[index]
        short = stopped_runs(pd.concat(pd.read_csv(csv, usecols=["seed", "env_steps"]) for csv in group))
        stopped = [csv.stem for csv in group if seeds[csv] in short]
        files += [csv for csv in group if seeds[csv] not in short]
        note = note_of(NOTES, env, config)
        if note or stopped:
            left_out = f" (left out, stopped early: {', '.join(stopped)})" if stopped else ""
            notes.append(f"- {env} {config}: {note or ''}{left_out}")
    table = run_script(
        "results_matrix.py", *[str(f) for f in files], "--tuning-seeds", *TUNING_SEEDS, "--output", "docs/images/matrix.png"
    )
    return table.rstrip("\n") + "\n\n" + "\n".join(notes) + "\n" if notes else table


def configuration_region(groups: dict[tuple[str, str], list[Path]]) -> str:
    """
    One section per env and configuration: curves figure and per-seed tables.

    :param groups: the CSV files of each (env, configuration)
    :return: the sections
    """
    sections = []
    for (env, config), files in groups.items():
        if env == KITCHEN_ENV and config != KITCHEN_REPORTING:
            continue
        image = f"images/{env}_{config}.png"
        tables = run_script(
            "plot_learning_curves.py",
            *[str(f) for f in files],
            "--env",
            env,
            "--config",
            config,
            "--tuning-seeds",
            *TUNING_SEEDS,
            "--output",
            f"docs/{image}",
        )
        note = note_of(EXPERIMENTS, env, config) or note_of(NOTES, env, config)
        suffix = f" ({note})" if note else ""
        sections.append(f"#### {env}, {config}{suffix}\n\n![{env} {config}]({image})\n\n{tables}\n")
    return "\n".join(sections)


def kitchen_cell(row: pd.Series) -> str:
    """
    One kitchen evaluation: subtasks completed, and the success rate in brackets when above 0.

    :param row: a CSV row
    :return: the cell text
    """
    cell = f"{row.mean_return:.2f}"
    if row.success_rate > 0:
        cell += f" ({100 * row.success_rate:.0f}%)"
    return cell


def kitchen_table(config: str, data: pd.DataFrame) -> str:
    """
    One kitchen configuration's table: a row per seed and protocol, a column per evaluation (the zoo's timesteps,
    headed by their env steps, which differ a little between seeds because an episode's last chunk may stop early).

    :param config: the configuration label
    :param data: its rows
    :return: a heading, the table and its episode count
    """
    columns = sorted(data.timesteps.unique())
    heads = [f"{data[data.timesteps == t].env_steps.median() / 1e3:.0f}k" for t in columns]
    lines = [
        f"**{KITCHEN_RUNS.get(config, config)}** (`{config}`)\n",
        "| seed | protocol | " + " | ".join(heads) + " |",
        "|" + "---|" * (2 + len(columns)),
    ]
    for seed, run in data.groupby("seed"):
        for protocol in PROTOCOLS:
            cells = {r.timesteps: kitchen_cell(r) for r in run[run.protocol == protocol].itertuples()}
            if cells:  # runs made before a protocol existed have none
                lines.append(f"| {seed} | {protocol} | " + " | ".join(cells.get(t, "") for t in columns) + " |")
    episodes = ", ".join(f"seed {seed}: {episodes_of(run)}" for seed, run in data.groupby("seed"))
    return "\n".join(lines) + f"\n\nEpisodes per evaluation and protocol: {episodes}.\n"


def kitchen_region(groups: dict[tuple[str, str], list[Path]]) -> str:
    """
    The kitchen tables, one per configuration (the reporting runs first).

    :param groups: the CSV files of each (env, configuration)
    :return: the tables and their legend
    """
    frames = [pd.read_csv(f) for (env, config), files in groups.items() if env == KITCHEN_ENV for f in files]
    if not frames:
        return "(no kitchen runs yet)"
    data = pd.concat(frames)
    order = [c for c in KITCHEN_RUNS if c in set(data.config)] + sorted(set(data.config) - set(KITCHEN_RUNS))
    tables = [kitchen_table(config, data[data.config == config]) for config in order]
    legend = (
        "(Subtasks completed out of 4, mean over the episodes; success rate, all 4 done, in brackets where above 0. "
        "Column 0k is the pretrained policy, evaluated by `benchmark_finetune.py` in an env built with the entry's "
        "targets; the later columns are the zoo's own evaluations.)"
    )
    return "\n".join(tables) + "\n" + legend


def replace_region(page: str, name: str, content: str) -> str:
    """
    Replace the text between ``<!-- begin:name -->`` and ``<!-- end:name -->``.

    :param page: the page
    :param name: the region's name
    :param content: its new text
    :return: the new page
    """
    pattern = re.compile(rf"(<!-- begin:{name} -->\n)(?:.*?\n)?(<!-- end:{name} -->)", re.DOTALL)
    if not pattern.search(page):
        raise ValueError(f"region {name!r} not found: add <!-- begin:{name} --> and <!-- end:{name} --> to the page")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), page, count=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page", default=str(ROOT / "docs" / "finetuning.md"), help="the page to update")
    parser.add_argument("--runs", default=str(ROOT / "docs" / "results" / "runs"), help="folder of the CSV files")
    args = parser.parse_args()
    csvs = sorted(Path(args.runs).resolve().glob("*.csv"))
    if not csvs:
        parser.error(f"no CSV files in {args.runs}: run benchmarks/benchmark_finetune.py first")
    groups = group_runs(csvs)
    page = Path(args.page).read_text()
    page = replace_region(page, "matrix", matrix_region(groups))
    page = replace_region(page, "configurations", configuration_region(groups))
    page = replace_region(page, "kitchen", kitchen_region(groups))
    with atomic_write(args.page) as f:
        f.write(page.encode())
    print(f"wrote {args.page} ({len(groups)} configurations)")


if __name__ == "__main__":
    main()
