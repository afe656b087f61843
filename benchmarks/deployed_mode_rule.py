"""
The deployed-mode rule on every fine-tuning configuration of the results matrix (issue 34): for each (env,
configuration) fine-tuned by reinflow_ppo, the start policy as that configuration builds it (the registry entry's
checkpoint and policy settings with the configuration's ``-params`` on top: file, K, noise bounds) is evaluated under
``mean``, ``median``, ``medoid``, ``zero`` and ``random`` over 40 episodes on the tuning env seeds (from 1000, never
those of a reported run); the configuration deploys the protocol with the highest mean return (ties: ``mean``). The
rule is the one the kitchen and pixel files were chosen by (docs/kitchen.md).

Configurations that build the same start policy (e.g. ``reflow_K4`` and ``reflow_K4_consistency0.1``: the term only
changes training) are measured once. One CSV row per configuration and protocol, ``chosen`` marking the rule's pick;
``benchmarks/deployed_vs_best.py --rule`` reads it. Evaluation goes through ``sb3_reinflow.tools.evaluate_pretrained``.

Example (about 20-30 minutes on one core for the locomotion matrix):
    OMP_NUM_THREADS=1 python benchmarks/deployed_mode_rule.py --output docs/results/deployed_mode_rule.csv
    python benchmarks/deployed_mode_rule.py --only Hopper-v4/shortcut_K1 --n-episodes 2 --output /tmp/rule.csv
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from run_matrix import CONFIGS, MATRIX, PAPER_RATES, ROOT

from sb3_reinflow.common.save_util import atomic_write_csv
from sb3_reinflow.zoo.literals import parse_kwargs_string

CANDIDATES = ("mean", "median", "medoid", "zero", "random")
TUNING_SEED = 1000
REGISTRY = ROOT / "hyperparams" / "reinflow_ppo.yml"
FIELDS = [
    *("env", "configs", "checkpoint", "policy_kwargs", "protocol"),
    *("mean_return", "std_return", "n_episodes", "seed", "chosen"),
]


def _params(config: str, env: str) -> dict[str, str]:
    """The configuration's ``-params`` as ``key -> value text`` (the values as rl_zoo3 reads them)."""
    args = list(CONFIGS[config].zoo_args)
    if config == "paper_hparams":
        args += PAPER_RATES.get(env, ())
    items = args[1:] if args[:1] == ["-params"] else args
    return dict(item.split(":", 1) for item in items)


def start_settings(env: str, config: str, registry: dict) -> tuple[str, dict]:
    """
    :return: the checkpoint name and the policy keyword arguments the configuration's start policy is built with
    """
    entry = registry[env]
    params = _params(config, env)
    checkpoint = params.get("pretrained_policy", repr(entry["pretrained_policy"])).strip("'\"")
    policy_kwargs = parse_kwargs_string(params.get("policy_kwargs", entry.get("policy_kwargs", "dict()")))
    return checkpoint, policy_kwargs


def starts(only: list[str] | None = None) -> dict[tuple[str, str, str], list[str]]:
    """
    :param only: ``env/config`` keys (None: every reinflow_ppo configuration of the matrix)
    :return: (env, checkpoint, policy kwargs as JSON) -> the configurations that start from it
    """
    with open(REGISTRY) as handle:
        registry = yaml.safe_load(handle)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for env, config in MATRIX:
        if CONFIGS[config].algo != "reinflow_ppo" or (only and f"{env}/{config}" not in only):
            continue
        checkpoint, policy_kwargs = start_settings(env, config, registry)
        key = (env, checkpoint, json.dumps(policy_kwargs, sort_keys=True))
        groups.setdefault(key, []).append(config)
    return groups


def evaluate(env: str, checkpoint: str, policy_kwargs: str, n_episodes: int, n_envs: int) -> list[dict]:
    """:return: evaluate_pretrained's CSV rows, one per candidate protocol"""
    # evaluate_pretrained takes K from --n-flow-steps (default: the file's), the rest from --policy-kwargs
    n_flow_steps = json.loads(policy_kwargs).get("n_flow_steps")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.csv"
        command = [
            *(sys.executable, "-m", "sb3_reinflow.tools.evaluate_pretrained", "--checkpoint", checkpoint, "--env", env),
            *("--protocols", *CANDIDATES, "--n-episodes", str(n_episodes), "--n-envs", str(n_envs)),
            *("--seed", str(TUNING_SEED), "--policy-kwargs", policy_kwargs, "--csv", str(path)),
            *(("--n-flow-steps", str(n_flow_steps)) if n_flow_steps else ()),
        ]
        subprocess.run(command, check=True)
        with open(path) as handle:
            return list(csv.DictReader(handle))


def choose(rows: list[dict]) -> str:
    """:return: the protocol with the highest mean return, ``mean`` on a tie"""
    scores = {row["protocol"]: float(row["mean_return"]) for row in rows}
    best = max(scores.values())
    return "mean" if scores.get("mean") == best else max(scores, key=scores.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="env/config keys of the matrix (default: all)")
    parser.add_argument("--n-episodes", type=int, default=40)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--output", required=True, help="CSV file (written atomically after each start policy)")
    args = parser.parse_args()
    table = []
    for (env, checkpoint, policy_kwargs), configs in starts(args.only).items():
        rows = evaluate(env, checkpoint, policy_kwargs, args.n_episodes, args.n_envs)
        chosen = choose(rows)
        for row in rows:
            table.append(
                {
                    "env": env,
                    "configs": " ".join(configs),
                    "checkpoint": checkpoint,
                    "policy_kwargs": policy_kwargs,
                    "protocol": row["protocol"],
                    "mean_return": round(float(row["mean_return"]), 2),
                    "std_return": round(float(row["std_return"]), 2),
                    "n_episodes": args.n_episodes,
                    "seed": f"{TUNING_SEED} on (tuning)",
                    "chosen": row["protocol"] == chosen,
                }
            )
        atomic_write_csv(args.output, table, FIELDS)
        print(f"{env} {' '.join(configs)}: deploys {chosen}", flush=True)


if __name__ == "__main__":
    main()
