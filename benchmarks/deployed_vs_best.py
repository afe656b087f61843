"""
The deployed mode against the best single evaluation protocol, on every configuration of the results matrix
(issue 34: "deployed mode within 5% of the best single protocol on every env and configuration").

For each (env, configuration) of ``run_matrix.MATRIX`` fine-tuned by reinflow_ppo, and the kitchen's reporting runs
(:data:`OTHER_RUNS`: made by ``benchmark_finetune.py`` directly, not by ``run_matrix.py``), it reads the committed run CSVs
(``docs/results/runs/<env>_<config>_<seed>.csv``, one row per evaluation and protocol) of the matrix's seeds and
compares, at the start (env step 0) and at each run's last evaluation, the mean over seeds of the deployed protocol
(the ``deployed`` column) with that of each deterministic protocol (mean, median, medoid, zero, random); the
stochastic policy is listed beside them but is not a deployment candidate. A protocol recorded on only some of the
seeds is compared on those seeds alone (``n_seeds``). ``ratio`` is deployed / best (returns are positive on these
tasks); ``within_5pct`` is ``ratio >= 0.95``.

With ``--rule`` (the CSV of ``benchmarks/deployed_mode_rule.py``: each configuration's mode chosen by the declared
rule on its start over tuning env seeds) each comparison is made twice: ``deployed_by`` ``runs`` compares the mode
the runs deployed, ``rule`` the rule's mode, read from the same evaluations (the runs evaluated every protocol at the
start and at the end, each on its own episodes of the same evaluation env, so a deployed mode can be compared after the
fact; the deployed mode only decides which protocol SB3's ``eval/mean_reward`` and ``best_model.zip`` follow). A rule
mode the runs did not record at that evaluation gives an empty score.

Example (seconds; reads CSVs only):
    python benchmarks/deployed_vs_best.py --rule docs/results/deployed_mode_rule.csv --output docs/results/deployed_vs_best.csv
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from run_matrix import CONFIGS, MATRIX, ROOT

from sb3_reinflow.common.save_util import atomic_write_csv

DETERMINISTIC = ("mean", "median", "medoid", "zero", "random")
# reporting runs outside run_matrix.MATRIX, with the seeds declared for them (docs/kitchen.md)
OTHER_RUNS: dict[tuple[str, str], tuple[int, ...]] = {("FrankaKitchen-v1", "shortcut_K4_rollout4k"): (201, 202, 203)}
FIELDS = [
    *("env", "config", "when", "deployed_by", "deployed", "deployed_score"),
    *("best", "best_score", "n_seeds", "ratio", "within_5pct"),
]


def read_run(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def scores_at(rows: list[dict], when: str) -> tuple[dict[str, float], str]:
    """:return: each protocol's mean score at the run's start or last evaluation, and the deployed protocol"""
    steps = [int(row["env_steps"]) for row in rows]
    at = 0 if when == "start" else max(steps)
    chosen = [row for row, step in zip(rows, steps, strict=True) if step == at]
    deployed = next(row["protocol"] for row in chosen if row["deployed"] == "True")
    return {row["protocol"]: float(row["mean_return"]) for row in chosen}, deployed


def compare(
    env: str, config: str, seeds: tuple[int, ...], runs_folder: Path, when: str, deployed: str | None = None
) -> dict | None:
    """
    :param deployed: the mode to compare (None: the one the runs deployed)
    :return: one row of the comparison, or None when none of the seeds' CSVs exists
    """
    per_seed = []
    for seed in seeds:
        path = runs_folder / f"{env}_{config}_{seed}.csv"
        if path.exists():
            per_seed.append(scores_at(read_run(path), when))
    if not per_seed:
        return None
    deployed_by = "runs" if deployed is None else "rule"
    deployed = deployed or per_seed[0][1]
    if not any(deployed in scores for scores, _ in per_seed):
        return {"env": env, "config": config, "when": when, "deployed_by": deployed_by, "deployed": deployed}
    candidates = defaultdict(list)
    for scores, _ in per_seed:
        for protocol in DETERMINISTIC:
            if protocol in scores and deployed in scores:
                candidates[protocol].append((scores[protocol], scores[deployed]))
    # each protocol against the deployed one on the seeds where both were recorded
    means = {protocol: (sum(a for a, _ in pairs) / len(pairs), sum(b for _, b in pairs) / len(pairs), len(pairs))
             for protocol, pairs in candidates.items()}  # fmt: skip
    best = max(means, key=lambda protocol: means[protocol][0] - means[protocol][1])
    best_score, deployed_score, n_seeds = means[best]
    ratio = deployed_score / best_score if best_score > 0 else float("nan")
    return {
        "env": env,
        "config": config,
        "when": when,
        "deployed_by": deployed_by,
        "deployed": deployed,
        "deployed_score": round(deployed_score, 2),
        "best": best,
        "best_score": round(best_score, 2),
        "n_seeds": n_seeds,
        "ratio": round(ratio, 3),
        "within_5pct": ratio >= 0.95,
    }


def read_rule(path: Path) -> dict[tuple[str, str], str]:
    """:return: (env, config) -> the mode the rule chose, from deployed_mode_rule.py's CSV"""
    chosen = {}
    for row in read_run(path):
        if row["chosen"] == "True":
            chosen.update({(row["env"], config): row["protocol"] for config in row["configs"].split()})
    return chosen


def comparison(runs_folder: Path, rule: dict[tuple[str, str], str] | None = None) -> list[dict]:
    """:param rule: (env, config) -> the rule's mode; each configuration it names is compared under it too"""
    rows = []
    configurations = {key: seeds for key, seeds in MATRIX.items() if CONFIGS[key[1]].algo == "reinflow_ppo"}
    for (env, config), seeds in {**configurations, **OTHER_RUNS}.items():
        for when in ("start", "final"):
            modes = [None] + ([rule[env, config]] if rule and (env, config) in rule else [])
            rows += [row for mode in modes if (row := compare(env, config, seeds, runs_folder, when, mode))]
    return rows


def score(value: float) -> str:
    """A score for the table: whole numbers for locomotion returns, two decimals for the kitchen's 0-4 subtasks."""
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| env | config | when | deployed by | deployed | best protocol | deployed / best | seeds |", "| --- " * 8 + "|"]
    for row in rows:
        head = f"| {row['env']} | {row['config']} | {row['when']} | {row['deployed_by']} | {row['deployed']}"
        if "ratio" not in row:
            lines.append(f"{head} (not recorded) | | | |")
            continue
        flag = "" if row["within_5pct"] else " **<0.95**"
        lines.append(
            f"{head} {score(row['deployed_score'])} | {row['best']} {score(row['best_score'])} | {row['ratio']:.3f}{flag} | "
            f"{row['n_seeds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-folder", default=str(ROOT / "docs" / "results" / "runs"))
    parser.add_argument("--rule", default=None, help="deployed_mode_rule.py's CSV: also compare the rule's modes")
    parser.add_argument("--output", default=None, help="CSV file (written atomically)")
    args = parser.parse_args()
    rows = comparison(Path(args.runs_folder), read_rule(Path(args.rule)) if args.rule else None)
    print(markdown(rows))
    if args.output:
        atomic_write_csv(args.output, rows, FIELDS)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
