"""
How fragile a policy file is to small, undirected changes of its velocity net: each tensor of ``actor.velocity_net``
gets Gaussian noise scaled to ``--scale`` of the tensor's own norm (so the whole net moves by about that fraction of
its norm), and the perturbed policy is evaluated like any policy file by ``python -m
sb3_reinflow.tools.evaluate_pretrained`` (the same env seeds for every draw). Scale 0 is the file itself.

Made to read a kitchen fine-tuning run that collapsed while its velocity net moved 0.65% of its norm (docs/kitchen.md):
if random moves of that size already lose the deployed score, the policy is fragile whatever PPO does.

Example (the shipped kitchen policy, two draws at 0.65% and one at 2.5%; about 10 minutes on one core):
    OMP_NUM_THREADS=1 python benchmarks/weight_perturbation.py --checkpoint FrankaKitchen-v1_shortcut \\
        --env sb3_reinflow/Kitchen-complete-v0 --scales 0 0.0065 0.0065 0.025 --protocols median random \\
        --n-episodes 20 --seed 1000 --output docs/results/kitchen_weight_perturbation.csv
"""

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import torch as th

from sb3_reinflow import ReinFlowPolicy
from sb3_reinflow.common.save_util import atomic_write_csv
from sb3_reinflow.pretrained import resolve_pretrained

PREFIX = "actor.velocity_net."


def perturbed(policy: ReinFlowPolicy, scale: float, generator: th.Generator) -> dict[str, float]:
    """
    Add to each velocity-net tensor Gaussian noise of norm ``scale`` x the tensor's norm, in place.

    :return: the velocity net's relative change, ||delta|| / ||theta|| over all its tensors
    """
    change = norm = 0.0
    with th.no_grad():
        for name, tensor in policy.named_parameters():
            if not name.startswith(PREFIX):
                continue
            noise = th.randn(tensor.shape, generator=generator)
            delta = noise * (scale * tensor.norm() / noise.norm().clamp_min(1e-12))
            tensor.add_(delta)
            change += float(delta.pow(2).sum())
            norm += float((tensor - delta).pow(2).sum())
    return {"relative_change": (change / norm) ** 0.5 if norm else 0.0}


def evaluate(path: Path, args: argparse.Namespace, out: Path) -> list[dict[str, str]]:
    """Evaluate one policy file with evaluate_pretrained; its CSV rows."""
    command = [sys.executable, "-m", "sb3_reinflow.tools.evaluate_pretrained", "--checkpoint", str(path)]
    command += ["--env", args.env, "--protocols", *args.protocols, "--n-episodes", str(args.n_episodes)]
    command += ["--n-envs", str(args.n_envs), "--seed", str(args.seed), "--csv", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(out, newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="policy file or shipped name")
    parser.add_argument("--env", required=True)
    parser.add_argument("--scales", type=float, nargs="+", required=True, help="one draw per entry (0: unperturbed)")
    parser.add_argument("--protocols", nargs="+", default=["median", "random"])
    parser.add_argument("--n-episodes", type=int, default=20)
    parser.add_argument("--n-envs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000, help="env seed (the same for every draw)")
    parser.add_argument("--output", required=True, help="CSV file (written atomically)")
    args = parser.parse_args()
    if any(scale < 0 for scale in args.scales):
        parser.error(f"--scales {args.scales}: a scale is a fraction of each tensor's norm, >= 0")
    generator = th.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for draw, scale in enumerate(args.scales):
            policy = ReinFlowPolicy.load(resolve_pretrained(args.checkpoint), device="cpu")
            change = perturbed(policy, scale, generator)
            path = Path(folder) / f"draw{draw}.safetensors"
            policy.save(path)
            for row in evaluate(path, args, Path(folder) / f"draw{draw}.csv"):
                rows.append({"draw": draw, "scale": scale, **change, "protocol": row["protocol"],
                             "mean_return": row["mean_return"], "std_return": row["std_return"],
                             "n_episodes": row["n_episodes"]})  # fmt: skip
                print(f"draw {draw}, scale {scale:g} (moved {change['relative_change']:.4f}): {row['protocol']} "
                      f"{float(row['mean_return']):.2f}", flush=True)  # fmt: skip
    atomic_write_csv(args.output, rows)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
