"""
Success rates of the pixel tasks (robosuite from a camera): the shipped start and the fine-tuning runs, as one CSV,
a table and a figure per task with ReinFlow's published start and end drawn in.

    # the start: the shipped checkpoint under the deployed mode and ReinFlow's protocol, 50 episodes each
    MUJOCO_GL=egl python benchmarks/pixel_results.py start --env PixelLift-v0 --episodes 50
    # Square ships no checkpoint: name the file to start from
    MUJOCO_GL=egl python benchmarks/pixel_results.py start --env PixelSquare-v0 --pretrained-policy square.safetensors
    # the runs: every rl_zoo3 log folder of the task (the seed is read from its args.yml)
    python benchmarks/pixel_results.py runs --env PixelLift-v0 --logs ~/runs/pixels/zoo/reinflow_ppo

Both append to (or rebuild their part of) ``docs/results/pixels.csv`` with the columns task, source (``start`` or
the run's seed), env_steps (chunks x 4, an upper bound: a chunk that ends an episode early counts 4), protocol,
success_rate, episodes. ``table`` prints the Markdown table of success per seed at the requested env steps and writes
``docs/images/<env>_pixels.png``. ``training`` writes, for the given run folders (tuning runs and runs short of their
length included, which ``runs`` leaves out of the results), the success rate of the training episodes (the noisy
chain PPO trains) per ``--window`` env steps and every evaluation, to its own CSV:

    python benchmarks/pixel_results.py training --env PixelCan-v0 --output docs/results/pixels_can_tuning.csv \
        --runs ~/runs/pixels/zoo/reinflow_ppo/PixelCan-v0_1 ~/runs/pixels_tune/zoo/reinflow_ppo/PixelCan-v0_1
"""

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import yaml

from sb3_reinflow.common.reinflow.resume_state import checkpoint_length
from sb3_reinflow.common.save_util import atomic_write_csv
from sb3_reinflow.zoo.run_files import read_monitor, read_run_args

ROOT = Path(__file__).resolve().parent.parent
CSV_PATH = ROOT / "docs" / "results" / "pixels.csv"
COLUMNS = ("task", "source", "env_steps", "protocol", "success_rate", "episodes")
CHUNK = 4
# ReinFlow's robomimic-image results (success rate: start, then end and the env steps it took), for the figures
PAPER = {"PixelCan-v0": (0.58, 0.98, 5.4e6), "PixelSquare-v0": (0.34, 0.77, 24.1e6)}


def read_rows() -> list[dict[str, str]]:
    if not CSV_PATH.exists():
        return []
    with open(CSV_PATH, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(rows: list[dict[str, object]]) -> None:
    CSV_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = CSV_PATH.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, CSV_PATH)


def replace_rows(task: str, sources: set[str], new_rows: list[dict[str, object]]) -> None:
    kept = [row for row in read_rows() if not (row["task"] == task and row["source"] in sources)]
    write_rows(kept + new_rows)


def evaluate_start(
    env_id: str, episodes: int, seed: int, protocols: list[str], pretrained_policy: str | None = None
) -> list[dict[str, object]]:
    """
    :param pretrained_policy: the policy file to evaluate (default: the registry entry's; Square ships none)
    :return: one row per protocol: the start's success rate over ``episodes`` episodes from env seed ``seed``
    """
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecTransposeImage

    import sb3_reinflow.envs  # noqa: F401  (registers the pixel ids)
    from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO
    from sb3_reinflow.common.reinflow.callbacks import evaluate_protocol
    from sb3_reinflow.zoo.literals import parse_kwargs_string

    entry = yaml.safe_load((ROOT / "hyperparams" / "reinflow_ppo.yml").read_text())[env_id]
    pretrained_policy = pretrained_policy or entry["pretrained_policy"]
    if pretrained_policy is None:
        raise ValueError(f"the {env_id} entry names no pretrained policy: pass one with --pretrained-policy")
    env = VecTransposeImage(
        make_vec_env(
            env_id,
            n_envs=1,
            seed=seed,
            env_kwargs=entry.get("env_kwargs", {}),
            wrapper_class=ActionChunkWrapper,
            wrapper_kwargs=dict(horizon=CHUNK),
        )
    )
    policy_kwargs = parse_kwargs_string(entry["policy_kwargs"])
    # seeded like the env, so that the protocols that draw noise score the same on every recording
    model = ReinFlowPPO(
        entry["policy"], env, pretrained_policy=pretrained_policy, policy_kwargs=policy_kwargs, seed=seed, device="cpu"
    )
    rows: list[dict[str, object]] = []
    for protocol in dict.fromkeys([model.policy.deterministic_mode, *protocols]):  # the deployed one first, once
        outcomes = evaluate_protocol(model, env, protocol, episodes)
        rate = float(np.mean(outcomes.successes)) if outcomes.successes else float(np.mean(outcomes.returns))
        rows.append(dict(task=env_id, source="start", env_steps=0, protocol=protocol, success_rate=rate, episodes=episodes))
        print(f"{env_id} start, {protocol}: success {rate:.2f} over {episodes} episodes", flush=True)
    env.close()
    return rows


def run_rows(env_id: str, logs: Path) -> list[dict[str, object]]:
    """:return: the evaluation rows of every run of ``env_id`` under ``logs`` that reached its declared length"""
    rows: list[dict[str, object]] = []
    for run in sorted(logs.glob(f"{env_id}_*")):
        if not ((run / "evaluations.npz").exists() and (run / env_id / "args.yml").exists()):
            continue
        length = checkpoint_length(run)  # from resume/progress.json, rewritten at each update and at the end
        if length is None:
            print(f"left out {run}: no resume/progress.json, so its length cannot be shown")
            continue
        reached, declared = length
        if reached < declared:
            print(f"left out {run}: {reached:,} of its {declared:,} timesteps (a result counts at its declared length)")
            continue
        rows += evaluation_rows(env_id, run)
    return rows


def evaluation_rows(env_id: str, run: Path) -> list[dict[str, object]]:
    """:return: one row per evaluation and protocol of one rl_zoo3 run folder"""
    seed = read_run_args(run, env_id)["seed"]
    data = np.load(run / "evaluations.npz")
    deployed = str(data["deterministic_mode"])
    series = {deployed: data["successes"]} if "successes" in data.files else {}
    series.update({key[len("successes_") :]: data[key] for key in data.files if key.startswith("successes_")})
    rows: list[dict[str, object]] = []
    for protocol, successes in series.items():
        for chunks, episode_successes in zip(data["timesteps"], successes, strict=False):
            rows.append(
                dict(
                    task=env_id,
                    source=str(seed),
                    env_steps=int(chunks) * CHUNK,
                    protocol=protocol,
                    success_rate=float(np.mean(episode_successes)),
                    episodes=len(episode_successes),
                )
            )
    return rows


def training_rows(env_id: str, run: Path, window: int) -> list[dict[str, object]]:
    """
    :return: the run's training success rate per ``window`` env steps (Monitor files in training-time order; a
        resumed run's files are appended, their times continued by ``read_monitor``, so the rows continue across
        resumes) and its evaluations, one row each
    """
    import pandas as pd

    seed = read_run_args(run, env_id)["seed"]
    episodes = pd.concat([read_monitor(path) for path in sorted(run.glob("*.monitor.csv"))])
    episodes = episodes.sort_values("t", kind="stable")
    env_steps = episodes["l"].cumsum().to_numpy()
    rows: list[dict[str, object]] = []
    for start in range(0, int(env_steps[-1]), window):
        inside = (env_steps > start) & (env_steps <= start + window)
        if inside.any():
            rate = float(episodes["r"].to_numpy()[inside].mean())
            rows.append(dict(seed=seed, kind="training", protocol="stochastic", env_steps=start + window,
                             success_rate=rate, episodes=int(inside.sum())))  # fmt: skip
    for row in evaluation_rows(env_id, run):
        rows.append(dict(seed=seed, kind="evaluation", protocol=row["protocol"], env_steps=row["env_steps"],
                         success_rate=row["success_rate"], episodes=row["episodes"]))  # fmt: skip
    return rows


def _matches(row: dict[str, str], source: str, protocol: str) -> bool:
    return row["source"] == source and row["protocol"] == protocol


def table(env_id: str, at: list[float]) -> None:
    rows = [row for row in read_rows() if row["task"] == env_id]
    protocols = sorted({row["protocol"] for row in rows})
    sources = sorted({row["source"] for row in rows if row["source"] != "start"})
    print(f"| {env_id} | protocol | start | " + " | ".join(f"{steps / 1e6:g}M" for steps in at) + " |")
    print("|---|---|---|" + "---|" * len(at))
    for source in sources:
        for protocol in protocols:
            start = [row for row in rows if row["source"] == "start" and row["protocol"] == protocol]
            cells = []
            for steps in at:
                near = [r for r in rows if _matches(r, source, protocol) and abs(int(r["env_steps"]) - steps) <= 0.05 * steps]
                cells.append(f"{float(near[0]['success_rate']):.2f}" if near else "n/a")
            start_cell = f"{float(start[0]['success_rate']):.2f}" if start else "n/a"
            print(f"| seed {source} | {protocol} | {start_cell} | " + " | ".join(cells) + " |")
    plot(env_id, rows)


def plot(env_id: str, rows: list[dict[str, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for source in sorted({row["source"] for row in rows if row["source"] != "start"}):
        for protocol, style in (("mean", "-"), ("random", "--")):
            points = sorted(
                (int(r["env_steps"]), float(r["success_rate"]))
                for r in rows
                if r["source"] == source and r["protocol"] == protocol
            )
            start = [float(r["success_rate"]) for r in rows if r["source"] == "start" and r["protocol"] == protocol]
            points = ([(0, start[0])] if start else []) + points
            if points:
                steps, rates = zip(*points, strict=True)
                ax.plot(np.array(steps) / 1e6, rates, style, marker="o", ms=3, label=f"seed {source}, {protocol}")
    if env_id in PAPER:
        paper_start, paper_end, paper_steps = PAPER[env_id]
        ax.axhline(paper_start, color="k", ls=":", lw=1, label="ReinFlow start")
        ax.axhline(paper_end, color="k", ls="-.", lw=1, label=f"ReinFlow end ({paper_steps / 1e6:g}M steps)")
    ax.set_xlabel("env steps (M)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{env_id}: fine-tuning from pixels")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    output = ROOT / "docs" / "images" / f"{env_id}_pixels.png"
    fig.savefig(output, dpi=120)
    print(f"wrote {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["start", "runs", "table", "training"])
    parser.add_argument("--runs", type=Path, nargs="+", default=[], help="training: the run folders")
    parser.add_argument("--window", type=int, default=25_000, help="training: env steps per training row")
    parser.add_argument("--output", type=Path, default=None, help="training: the CSV to write")
    parser.add_argument("--env", required=True)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000, help="env seed of the start evaluation")
    parser.add_argument("--protocols", nargs="+", default=["random"], help="protocols besides the deployed one")
    parser.add_argument("--pretrained-policy", default=None, help="start: a policy file (default: the entry's)")
    parser.add_argument("--logs", type=Path, default=Path("~/runs/pixels/zoo/reinflow_ppo").expanduser())
    parser.add_argument("--at", type=float, nargs="+", default=[0.1e6, 0.25e6, 0.5e6, 1e6])
    args = parser.parse_args()
    if args.what == "start":
        rows = evaluate_start(args.env, args.episodes, args.seed, args.protocols, args.pretrained_policy)
        replace_rows(args.env, {"start"}, rows)
    elif args.what == "runs":
        new = run_rows(args.env, args.logs)
        replace_rows(args.env, {str(row["source"]) for row in new}, new)
        print(f"{len(new)} rows from {args.logs}")
    elif args.what == "training":
        rows = [row for run in args.runs for row in training_rows(args.env, run.expanduser(), args.window)]
        atomic_write_csv(args.output, rows)
        print(f"{len(rows)} rows to {args.output}")
    else:
        table(args.env, args.at)


if __name__ == "__main__":
    main()
