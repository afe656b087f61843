"""
Record or check that short seeded trainings give bit-identical parameters and optimizer state.

Three runs, each a few hundred policy steps on one CPU thread:

- ``hopper_default``: ReinFlowPPO from the shipped ``Hopper-v4_reflow`` policy, default settings;
- ``hopper_options``: the same with the ``learn_decay`` noise schedule, the BC term and the consistency term;
- ``pendulum_scratch``: ReinFlowPPO with ``MlpPolicy`` from scratch on Pendulum-v1.

``python tests/test_bit_identity.py --record`` writes ``tests/reference/bit_identity.json`` (SHA-256 of every policy
tensor and of the optimizer state, with the torch and SB3 versions that produced them); ``test_bit_identity``
compares a fresh run against it (skipped on another platform: other versions of torch, SB3, numpy, gymnasium or
mujoco, another CPU kernel set or another processor may round differently; record again there to check it).
"""

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stable_baselines3
import torch as th

REFERENCE = Path(__file__).resolve().parent / "reference" / "bit_identity.json"


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(array.dtype.str.encode() + str(array.shape).encode() + array.tobytes()).hexdigest()


def _optimizer_digest(optimizer: th.optim.Optimizer) -> str:
    state = optimizer.state_dict()
    hasher = hashlib.sha256()
    for index in sorted(state["state"]):
        for key in sorted(state["state"][index]):
            value = state["state"][index][key]
            value = value.detach().cpu().numpy() if isinstance(value, th.Tensor) else np.asarray(value)
            hasher.update(f"{index}/{key}".encode() + _digest(value).encode())
    groups = [{k: v for k, v in group.items() if k != "params"} for group in state["param_groups"]]
    hasher.update(json.dumps(groups, sort_keys=True, default=str).encode())
    return hasher.hexdigest()


def _fingerprint(model: Any) -> dict[str, Any]:
    tensors = {name: _digest(value.detach().cpu().numpy()) for name, value in model.policy.state_dict().items()}
    return {"policy": dict(sorted(tensors.items())), "optimizer": _optimizer_digest(model.policy.optimizer)}


def run_all() -> dict[str, Any]:
    """:return: the fingerprints of the three short trainings"""
    import gymnasium as gym

    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.common.wrappers import ActionChunkWrapper

    th.set_num_threads(1)
    results = {}
    small = dict(n_steps=64, batch_size=32, n_epochs=2, seed=3, device="cpu")
    hopper_options = dict(noise_std_schedule="learn_decay", bc_coef=0.1, consistency_coef=0.1, critic_warmup_iterations=1)
    for name, extra in (("hopper_default", {}), ("hopper_options", hopper_options)):
        env = ActionChunkWrapper(gym.make("Hopper-v4"), horizon=4)
        model = ReinFlowPPO.from_pretrained("Hopper-v4_reflow", env, **small, **extra)
        model.learn(256)
        results[name] = _fingerprint(model)
    model = ReinFlowPPO(
        "MlpPolicy",
        "Pendulum-v1",
        policy_kwargs=dict(n_flow_steps=2, net_arch=[16]),
        **small,  # type: ignore[arg-type]
    )
    model.learn(256)
    results["pendulum_scratch"] = _fingerprint(model)
    return results


def _versions() -> dict[str, str]:
    """The platform the digests hold for: the libraries whose arithmetic the trainings use, and torch's CPU kernels
    (a recording from one machine failed on another with the same torch and SB3 versions)."""
    import gymnasium
    import mujoco

    return {
        "torch": th.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "cpu_capability": th.backends.cpu.get_cpu_capability(),
        "cpu_model": _cpu_model(),
    }


def _cpu_model() -> str:
    """:return: the processor's model name (the same torch kernels rounded differently on an Intel and an AMD CPU)"""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().split("\n\n")[0].splitlines():  # the first processor's entry
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    # a virtual machine may name only the vendor's line ("AMD EPYC"): the family and model tell its generations apart
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


BOUND_BUFFERS = ("logvar_min", "logvar_max")


def test_bit_identity() -> None:
    """Default-setting trainings reproduce the recorded parameters and optimizer state bit for bit."""
    reference = json.loads(REFERENCE.read_text())
    versions = reference.pop("versions")
    if versions != _versions():
        pytest.skip(
            f"reference recorded with {versions}, running {_versions()}: record it here with "
            "python tests/test_bit_identity.py --record (at a commit whose training is known good) to check this platform"
        )
    with th.random.fork_rng():
        results = run_all()
    for run, expected in reference.items():
        # the noise-bound buffers left the state dict (the policy's arguments hold the bounds); every other tensor
        # must match the recording, and the bounds themselves are checked against the arguments elsewhere
        recorded = {key: value for key, value in expected["policy"].items() if not key.endswith(BOUND_BUFFERS)}
        assert results[run]["policy"] == recorded, run
        assert results[run]["optimizer"] == expected["optimizer"], run


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_bit_identity.py --record")
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps({**run_all(), "versions": _versions()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}")
