"""
Speed of ReinFlowPPO on Hopper-v4 against SB3 PPO and the bare env, all measured in one run with the sides
alternating (the machine may be shared, so only same-run comparisons are meaningful):

- training throughput (env steps/s) of the bare env (random actions), SB3 PPO ``MlpPolicy``, ReinFlowPPO K=4 and
  K=1 (Ta=4 action chunks, paper-sized nets), with 1 and 2 torch threads;
- ``predict`` latency of one observation (median, p95) at K=1 and K=4, ``deterministic_mode`` "mean", "median",
  "medoid" and "zero" (``--predict-only``: this table alone, about a minute with ``--quick``);
- ``evaluate_actions`` plus backward on 512 and 50,000 samples, and sampling (``policy.forward``) of 40
  observations, K=4;
- the memory of a 2M-env-step fine-tuning run with the zoo's Hopper-v4 settings (rollout buffer and model),
  computed from the buffer's arrays and the parameter count;
- with ``--compile``: ``compile_chain=True`` against the eager chain (same weights, alternating, after the one-off
  compilation): ``predict`` at K=4 in both modes, sampling of 40 observations, ``evaluate_actions`` plus backward on
  512 samples, and training throughput at K=4, with the largest action and log-probability differences;
- with ``--env-side``: one Hopper-v4 env's steps/s bare and under ``ActionChunkWrapper``, and ReinFlowPPO K=4's
  training throughput with ``DummyVecEnv`` against ``SubprocVecEnv`` (1 torch thread, alternating);
- with ``--breakdown``: where SB3 PPO's and ReinFlowPPO K=4's training time goes (env steps, policy forward in
  rollouts, PPO update, ReinFlowPPO's logged chain statistics, the rest), in ms per env step, 1 torch thread;
- with ``--roofline``: the machine's float32 matrix-product rate (GFLOP/s, 1 and 2 threads) and, from the policy's
  512x512 hidden layers alone, the least time the loss + backward on 50,000 samples and ``predict`` could take at
  that rate (a bound on what any exact-math speed-up can reach);
- with ``--bf16``: ``evaluate_actions`` plus backward on 512 samples in float32 against the same under
  ``torch.autocast(dtype=torch.bfloat16)`` (the issue's reduced-precision idea), with the PPO ratio error it brings.

Env steps are counted under the chunking wrapper, so early chunk stops are not over-counted. All sides use the
same n_envs, n_steps (policy steps per env), batch size and epochs.

Usage: python benchmarks/benchmark_throughput.py [--quick] [--timesteps 16384] [--repeats 2] [--compile] [--bf16] [--roofline]
    [--env-side] [--breakdown] [--predict-only]
"""

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO

ENV_ID = "Hopper-v4"
HORIZON = 4
THREADS = (1, 2)


class StepCounter(gym.Wrapper):
    """Counts env steps across all instances."""

    total = 0

    def step(self, action: Any) -> Any:
        StepCounter.total += 1
        return self.env.step(action)


class Latency(NamedTuple):
    """Latency in milliseconds."""

    median_ms: float
    p95_ms: float


def _chunked(env: gym.Env, horizon: int) -> gym.Env:
    return ActionChunkWrapper(StepCounter(env), horizon=horizon)


def make_model(side: str, args: argparse.Namespace) -> Any:
    """
    :param side: "ppo", or "reinflow_k<K>"
    :param args: command-line arguments
    :return: a fresh model on Hopper-v4
    """
    common = dict(n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs, seed=0, device="cpu")
    if side == "ppo":
        env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=0, wrapper_class=StepCounter)
        return PPO("MlpPolicy", env, **common)
    compile_chain = side.endswith("_compiled")
    n_flow_steps = int(side.removeprefix("reinflow_k").removesuffix("_compiled"))
    env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=0, wrapper_class=_chunked, wrapper_kwargs=dict(horizon=HORIZON))
    policy_kwargs = dict(n_flow_steps=n_flow_steps, compile_chain=compile_chain)
    return ReinFlowPPO("MlpPolicy", env, policy_kwargs=policy_kwargs, **common)


def bare_env_steps_per_s(args: argparse.Namespace) -> float:
    """Env steps/s of the same vectorised env stepped with random actions (the simulator's ceiling)."""
    env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.0, 1.0, size=(args.timesteps, args.n_envs, *env.action_space.shape)).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return args.timesteps * args.n_envs / (time.perf_counter() - start)


def training_steps_per_s(side: str, args: argparse.Namespace) -> float:
    """Env steps/s of ``learn`` after one untimed warm-up iteration."""
    model = make_model(side, args)
    model.learn(args.n_steps * args.n_envs)
    StepCounter.total = 0
    start = time.perf_counter()
    model.learn(args.timesteps, reset_num_timesteps=False)
    return StepCounter.total / (time.perf_counter() - start)


def time_calls(fn: Callable[[], Any], n_calls: int, n_warmup: int = 10) -> Latency:
    for _ in range(n_warmup):
        fn()
    timings = []
    for _ in range(n_calls):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return Latency(statistics.median(timings) * 1e3, float(np.percentile(timings, 95)) * 1e3)


def make_flow_model(n_flow_steps: int, compile_chain: bool = False) -> ReinFlowPPO:
    env = ActionChunkWrapper(gym.make(ENV_ID), horizon=HORIZON)
    policy_kwargs = dict(n_flow_steps=n_flow_steps, compile_chain=compile_chain)
    return ReinFlowPPO("MlpPolicy", env, policy_kwargs=policy_kwargs, device="cpu", seed=0)


def predict_latency(model: ReinFlowPPO, mode: str, n_calls: int) -> Latency:
    model.policy.deterministic_mode = mode  # type: ignore[assignment]
    obs = model.observation_space.sample()
    return time_calls(lambda: model.predict(obs, deterministic=True), n_calls)


def evaluate_backward_s(model: ReinFlowPPO, n_samples: int, n_calls: int, bf16: bool = False) -> float:
    """
    Seconds of ``evaluate_actions`` plus backward of the summed outputs on ``n_samples`` stored chains.

    :param bf16: run ``evaluate_actions`` under ``torch.autocast(dtype=torch.bfloat16)``
    """
    policy = model.policy
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(n_samples)]))
    with th.no_grad():
        chains = policy(obs)[0]

    def step() -> None:
        policy.optimizer.zero_grad(set_to_none=True)
        with th.autocast("cpu", dtype=th.bfloat16, enabled=bf16):
            values, log_prob, entropy = policy.evaluate_actions(obs, chains)
        (values.float().sum() + log_prob.float().sum() + entropy.float().sum()).backward()  # type: ignore[union-attr]

    return time_calls(step, n_calls, n_warmup=1).median_ms / 1e3


def sampling_latency(model: ReinFlowPPO, n_obs: int, n_calls: int) -> Latency:
    """Latency of ``policy.forward`` (the rollout call: chains, values, log-probs) on ``n_obs`` observations."""
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(n_obs)]))

    def sample() -> None:
        with th.no_grad():
            model.policy(obs)

    return time_calls(sample, n_calls)


def run_memory_mib(n_envs: int = 4, n_steps: int = 256) -> dict[str, float]:
    """
    Memory of a fine-tuning run with the zoo's Hopper-v4 settings (``hyperparams/reinflow_ppo.yml``: n_envs 4,
    n_steps 256, K=4): computed, not sampled. The rollout buffer holds one iteration whatever the run's length, so a
    2M-env-step run needs the same; the model counts parameters, gradients and the two AdamW moments.
    """
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=0, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=HORIZON))
    model = ReinFlowPPO("MlpPolicy", env, n_steps=n_steps, policy_kwargs=dict(n_flow_steps=4), device="cpu", seed=0)
    buffer = model.rollout_buffer
    buffer_bytes = sum(value.nbytes for value in vars(buffer).values() if isinstance(value, np.ndarray))
    param_bytes = sum(param.numel() * param.element_size() for param in model.policy.parameters())
    mib = 2**20
    return {"rollout_buffer": buffer_bytes / mib, "model_params": param_bytes / mib, "model_total": 4 * param_bytes / mib}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def training_table(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    sides = ["bare_env", "ppo", "reinflow_k4", "reinflow_k1"]
    results: dict[int, dict[str, list[float]]] = {n: {side: [] for side in sides} for n in args.threads}
    for _ in range(args.repeats):
        for n_threads in args.threads:
            th.set_num_threads(n_threads)
            for side in sides:
                rate = bare_env_steps_per_s(args) if side == "bare_env" else training_steps_per_s(side, args)
                results[n_threads][side].append(rate)
                print(f"  threads {n_threads} {side:>12}: {rate:8.0f} env steps/s", flush=True)
    return {n: {side: _median(rates) for side, rates in by_side.items()} for n, by_side in results.items()}


LATENCY_MODES = ("mean", "median", "medoid", "zero")


def latency_table(args: argparse.Namespace) -> dict[str, Latency]:
    models = {n_flow_steps: make_flow_model(n_flow_steps) for n_flow_steps in (1, 4)}
    runs: dict[str, list[Latency]] = {}
    for _ in range(args.repeats):
        for n_flow_steps, model in models.items():
            for mode in LATENCY_MODES:
                runs.setdefault(f"K={n_flow_steps} {mode}", []).append(predict_latency(model, mode, args.predict_calls))
    return {key: Latency(_median([r.median_ms for r in rs]), _median([r.p95_ms for r in rs])) for key, rs in runs.items()}


def compile_table(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """
    ``compile_chain=True`` against eager, same weights, alternating; 1 thread for ``predict``, 2 for the rest.

    :return: per measurement, (eager, compiled), in ms (throughput: env steps/s)
    """
    eager, compiled = make_flow_model(4), make_flow_model(4, compile_chain=True)
    compiled.policy.load_state_dict(eager.policy.state_dict())
    obs = th.as_tensor(np.stack([eager.observation_space.sample() for _ in range(40)]))
    with th.no_grad():
        noise = th.randn(40, eager.policy.chain_length, eager.policy.flat_action_dim)
        reference = eager.policy.actor.sample(eager.policy.actor_features(obs), noise=noise)
        fast = compiled.policy.actor.sample(compiled.policy.actor_features(obs), noise=noise)
    chain_error = (fast.chains - reference.chains).abs().max()
    log_prob_error = (fast.log_prob - reference.log_prob).abs().max()
    print(
        f"  compiled against eager, 40 chains with the same noise: chains differ by at most {chain_error:.1e}, "
        f"log-probabilities by {log_prob_error:.1e}"
    )
    measurements: dict[str, Callable[[ReinFlowPPO], float]] = {
        "predict K=4 mean (1 thread)": lambda m: predict_latency(m, "mean", args.predict_calls).median_ms,
        "predict K=4 zero (1 thread)": lambda m: predict_latency(m, "zero", args.predict_calls).median_ms,
        "sampling 40 obs (2 threads)": lambda m: sampling_latency(m, 40, args.predict_calls).median_ms,
        "evaluate_actions + backward 512 (2 threads)": lambda m: evaluate_backward_s(m, 512, 10) * 1e3,
    }
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for name, measure in measurements.items():
            th.set_num_threads(1 if name.startswith("predict") else 2)
            pair = (measure(eager), measure(compiled))
            results.setdefault(name, []).append(pair)
            print(f"  {name}: eager {pair[0]:.3f} ms, compiled {pair[1]:.3f} ms", flush=True)
        for n_threads in args.threads:
            th.set_num_threads(n_threads)
            pair = (training_steps_per_s("reinflow_k4", args), training_steps_per_s("reinflow_k4_compiled", args))
            results.setdefault(f"training K=4, env steps/s ({n_threads} threads)", []).append(pair)
            print(f"  training K=4, {n_threads} threads: eager {pair[0]:.0f}, compiled {pair[1]:.0f} env steps/s", flush=True)
    return {name: (_median([p[0] for p in pairs]), _median([p[1] for p in pairs])) for name, pairs in results.items()}


def bf16_table(args: argparse.Namespace) -> None:
    """
    ``evaluate_actions`` plus backward on 512 samples, float32 against bfloat16 autocast, alternating, 2 threads; and
    the PPO ratio error of bfloat16: exp(log-prob under autocast - float32 log-prob of the rollout) - 1.
    """
    th.set_num_threads(2)
    model = make_flow_model(4)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(512)]))
    with th.no_grad():
        chains, _, rollout_log_prob = model.policy(obs)
        with th.autocast("cpu", dtype=th.bfloat16):
            bf16_log_prob = model.policy.evaluate_actions(obs, chains)[1].float()
    ratio_error = (bf16_log_prob - rollout_log_prob).exp().sub(1).abs().max()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for bf16 in (False, True):
            times[bf16].append(evaluate_backward_s(model, 512, 5, bf16=bf16) * 1e3)
            print(f"  evaluate_actions + backward 512, {'bfloat16' if bf16 else 'float32'}: {times[bf16][-1]:.1f} ms")
    fp32, bf16 = _median(times[False]), _median(times[True])
    print("\n| evaluate_actions + backward, 512 samples, 2 threads | float32 | bfloat16 autocast | speedup | ratio error |")
    print("|---|---|---|---|---|")
    print(f"| K=4 | {fp32:.1f} ms | {bf16:.1f} ms | {fp32 / bf16:.2f}x | {ratio_error:.1e} |")


def matmul_gflops(n_threads: int, rows: int = 8192, width: int = 512) -> float:
    """:return: float32 GFLOP/s of a (rows x width) @ (width x width) product, best of 5 timings of 10 products"""
    th.set_num_threads(n_threads)
    a, b = th.randn(rows, width), th.randn(width, width)
    for _ in range(3):
        a @ b
    best = min(time_calls(lambda: [a @ b for _ in range(10)], 1, n_warmup=0).median_ms for _ in range(5)) / 10 / 1e3
    return 2 * rows * width * width / best / 1e9


def hidden_macs_per_row(model: ReinFlowPPO) -> int:
    """:return: multiply-adds of the velocity net's square hidden Linear layers (512x512) per chain row and step"""
    layers = [m for m in model.policy.actor.velocity_net.modules() if isinstance(m, th.nn.Linear)]
    return sum(m.in_features * m.out_features for m in layers if m.in_features == m.out_features >= 256)


def roofline(args: argparse.Namespace) -> None:
    """Matrix-product rate of this machine, and the least time the targets' computations could take at it."""
    model = make_flow_model(4)
    macs, n_steps = hidden_macs_per_row(model), model.policy.n_flow_steps
    rates = {n: matmul_gflops(n) for n in args.threads}
    print(f"velocity net hidden layers: {macs / 1e6:.3f}M multiply-adds per chain row and step, K={n_steps}")
    n_chains = model.policy.actor.n_mean_chains
    print(
        f"| torch threads | matmul GFLOP/s | loss + backward, {args.large_batch} samples: least time "
        f"| predict ({n_chains} chains): least time |"
    )
    print("|---|---|---|---|")
    for n_threads, gflops in rates.items():
        # backward costs about twice the forward (gradients of the inputs and of the weights)
        loss_flop = 3 * 2 * macs * n_steps * args.large_batch
        predict_flop = 2 * macs * n_steps * n_chains
        print(f"| {n_threads} | {gflops:.0f} | {loss_flop / gflops / 1e9:.2f} s | {predict_flop / gflops / 1e6:.3f} ms |")


def chunk_wrapper_rates(n_env_steps: int) -> tuple[float, float]:
    """
    Env steps/s of one Hopper-v4 env stepped with uniform random actions, bare and under ``ActionChunkWrapper``
    (Ta=4 chunks, counting the env steps each chunk ran), resetting after each episode.

    :param n_env_steps: env steps per side
    :return: (bare, chunked)
    """
    rates = []
    for horizon in (1, HORIZON):
        env = gym.make(ENV_ID) if horizon == 1 else ActionChunkWrapper(gym.make(ENV_ID), horizon=horizon)
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1.0, 1.0, size=(n_env_steps // horizon, *env.action_space.shape))
        steps, start = 0, time.perf_counter()
        for action in actions.astype(np.float32):
            _, _, terminated, truncated, info = env.step(action)
            steps += info.get("chunk_steps", 1)
            if terminated or truncated:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
    return rates[0], rates[1]


def vec_env_rate(vec_env_cls: type, args: argparse.Namespace) -> float:
    """
    Training throughput (env steps/s of ``learn`` after one untimed iteration) of ReinFlowPPO K=4 with the given
    vectorised env class; env steps are counted from the chunk wrapper's ``chunk_steps`` in the main process, so that
    the count also works with envs in subprocesses.
    """
    env = make_vec_env(
        ENV_ID,
        n_envs=args.n_envs,
        seed=0,
        vec_env_cls=vec_env_cls,
        wrapper_class=ActionChunkWrapper,
        wrapper_kwargs=dict(horizon=HORIZON),
    )
    model = ReinFlowPPO(
        "MlpPolicy",
        env,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        seed=0,
        device="cpu",
        policy_kwargs=dict(n_flow_steps=4),
    )
    model.learn(args.n_steps * args.n_envs)
    counter = ChunkStepCounter()
    start = time.perf_counter()
    model.learn(args.timesteps, reset_num_timesteps=False, callback=counter)
    rate = counter.env_steps / (time.perf_counter() - start)
    env.close()
    return rate


class ChunkStepCounter(BaseCallback):
    """Sums the env steps of every chunk the rollouts ran (``info["chunk_steps"]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.env_steps = 0

    def _on_step(self) -> bool:
        self.env_steps += sum(info.get("chunk_steps", 1) for info in self.locals["infos"])
        return True


def env_side(args: argparse.Namespace) -> None:
    """The env side of ReinFlowPPO's throughput: the chunk wrapper's overhead and the vectorised env class."""
    th.set_num_threads(1)
    wrapper: dict[str, list[float]] = {"bare": [], "chunked": []}
    training: dict[str, list[float]] = {"DummyVecEnv": [], "SubprocVecEnv": []}
    for repeat in range(args.repeats):
        bare, chunked = chunk_wrapper_rates(4 * args.timesteps)
        wrapper["bare"].append(bare)
        wrapper["chunked"].append(chunked)
        for cls in (DummyVecEnv, SubprocVecEnv):
            training[cls.__name__].append(vec_env_rate(cls, args))
        print(
            f"  repeat {repeat + 1}: bare {bare:.0f}, chunked {chunked:.0f}, "
            + ", ".join(f"{name} {rates[-1]:.0f}" for name, rates in training.items()),
            flush=True,
        )
    bare, chunked = _median(wrapper["bare"]), _median(wrapper["chunked"])
    print(f"\none env, 1 thread: bare {bare:.0f} env steps/s, under ActionChunkWrapper {chunked:.0f} ({chunked / bare:.3f}x)")
    dummy, subproc = _median(training["DummyVecEnv"]), _median(training["SubprocVecEnv"])
    print(
        f"ReinFlowPPO K=4 training, {args.n_envs} envs, 1 torch thread: DummyVecEnv {dummy:.0f} env steps/s, "
        f"SubprocVecEnv {subproc:.0f} ({subproc / dummy:.2f}x)"
    )


class PhaseTimer:
    """
    Wall-clock time of a model's env steps (``step_wait``), policy calls (``forward``), PPO update (``train``) and,
    for ReinFlowPPO, the chain statistics logged after each update (``_record_chain_stats``, run inside ``train``
    and reported apart from it).
    """

    def __init__(self, model: Any) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        model.env.step_wait = self._timed(model.env.step_wait, PHASES[0])
        model.policy.forward = self._timed(model.policy.forward, PHASES[1])
        model.train = self._timed(model.train, PHASES[2])
        if hasattr(model, "_record_chain_stats"):
            model._record_chain_stats = self._timed(model._record_chain_stats, PHASES[3])

    def _timed(self, method: Callable[..., Any], phase: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        return timed

    def ms_per_env_step(self, total_s: float, env_steps: int) -> dict[str, float]:
        """:return: each phase's milliseconds per env step, the update without the statistics, and the rest"""
        seconds = dict(self.seconds)
        seconds[PHASES[2]] -= seconds[PHASES[3]]
        seconds[PHASES[4]] = total_s - sum(seconds.values())
        return {phase: 1e3 * value / env_steps for phase, value in seconds.items()}


PHASES = ("env steps", "policy forward (rollouts)", "PPO update", "chain statistics (logging)", "the rest")


def time_breakdown(args: argparse.Namespace) -> None:
    """
    Where the training time of SB3 PPO and ReinFlowPPO K=4 goes (1 torch thread, after one untimed iteration; the
    sides alternate over ``args.repeats``, medians per phase).
    """
    th.set_num_threads(1)
    runs: dict[str, list[dict[str, float]]] = {"ppo": [], "reinflow_k4": []}
    for _ in range(args.repeats):
        for side, side_runs in runs.items():
            model = make_model(side, args)
            model.learn(args.n_steps * args.n_envs)
            timer = PhaseTimer(model)  # after the warm-up: only the timed learn is counted
            StepCounter.total = 0
            start = time.perf_counter()
            model.learn(args.timesteps, reset_num_timesteps=False)
            total = time.perf_counter() - start
            side_runs.append({"env steps/s": StepCounter.total / total, **timer.ms_per_env_step(total, StepCounter.total)})
    print("| side | env steps/s | " + " | ".join(f"{phase}, ms per env step" for phase in PHASES) + " |")
    print("|---" * (len(PHASES) + 2) + "|")
    for side, side_runs in runs.items():
        medians = {key: _median([run[key] for run in side_runs]) for key in side_runs[0]}
        print(f"| {side} | {medians['env steps/s']:.0f} | " + " | ".join(f"{medians[p]:.3f}" for p in PHASES) + " |")


def print_compile_table(table: dict[str, tuple[float, float]]) -> None:
    print("\n| compile_chain | eager | compiled | speedup |")
    print("|---|---|---|---|")
    for name, (eager, compiled) in table.items():
        speedup = eager / compiled if "env steps/s" not in name else compiled / eager
        print(f"| {name} | {eager:.3f} | {compiled:.3f} | {speedup:.2f}x |")


def print_latencies(latencies: dict[str, Latency], n_calls: int) -> None:
    print(f"\npredict, one observation, 1 thread ({n_calls} calls, median of repeats):")
    for key, latency in latencies.items():
        print(f"  {key:>10}: median {latency.median_ms:.3f} ms, p95 {latency.p95_ms:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=16384, help="policy steps timed per training run")
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--n-steps", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--n-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats of each measurement (2; --quick: 1)")
    parser.add_argument("--predict-calls", type=int, default=1000)
    parser.add_argument("--large-batch", type=int, default=50_000, help="samples of the large evaluate_actions batch")
    parser.add_argument("--quick", action="store_true", help="small budgets (about 1.5 minutes on 2 busy cores)")
    parser.add_argument("--threads", type=int, nargs="+", default=list(THREADS), help="torch thread counts to compare")
    parser.add_argument("--compile", action="store_true", help="also compare compile_chain=True against eager")
    parser.add_argument("--compile-only", action="store_true", help="only the compile_chain comparison")
    parser.add_argument("--bf16", action="store_true", help="only the bfloat16 autocast comparison of the loss")
    parser.add_argument("--roofline", action="store_true", help="only the matrix-product rate and the least times")
    parser.add_argument("--breakdown", action="store_true", help="only where the training time goes, per env step")
    parser.add_argument("--predict-only", action="store_true", help="only the predict latency of each deterministic mode")
    parser.add_argument(
        "--env-side", action="store_true", help="only the chunk wrapper's overhead and DummyVecEnv against SubprocVecEnv"
    )
    args = parser.parse_args()
    if args.quick:
        args.timesteps, args.n_steps, args.predict_calls = 1024, 256, 200
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2

    if args.bf16:
        bf16_table(args)
        return
    if args.roofline:
        roofline(args)
        return
    if args.env_side:
        env_side(args)
        return
    if args.breakdown:
        time_breakdown(args)
        return
    if args.predict_only:
        th.set_num_threads(1)
        print_latencies(latency_table(args), args.predict_calls)
        return
    if args.compile or args.compile_only:
        print("compile_chain=True against eager (the first calls compile; they are not timed)")
        compile_results = compile_table(args)
        print_compile_table(compile_results)
        if args.compile_only:
            return
    print(f"training throughput, {ENV_ID}, n_envs {args.n_envs}, n_steps {args.n_steps}, {args.timesteps} policy steps")
    training = training_table(args)
    th.set_num_threads(1)
    latencies = latency_table(args)

    th.set_num_threads(2)
    model = make_flow_model(4)
    loss_512 = [evaluate_backward_s(model, 512, 10) for _ in range(args.repeats)]
    loss_large = [evaluate_backward_s(model, args.large_batch, 1) for _ in range(args.repeats)]
    sampling = [sampling_latency(model, 40, args.predict_calls).median_ms for _ in range(args.repeats)]
    memory = run_memory_mib()

    print("\n| torch threads | bare env | SB3 PPO MlpPolicy | ReinFlowPPO K=4 | ReinFlowPPO K=1 | K=4 / PPO | K=1 / PPO |")
    print("|---|---|---|---|---|---|---|")
    for n_threads, rates in training.items():
        ppo = rates["ppo"]
        print(
            f"| {n_threads} | {rates['bare_env']:.0f} | {ppo:.0f} | {rates['reinflow_k4']:.0f} | {rates['reinflow_k1']:.0f} "
            f"| {rates['reinflow_k4'] / ppo:.2f} | {rates['reinflow_k1'] / ppo:.2f} |"
        )
    print_latencies(latencies, args.predict_calls)
    print("\nK=4, 2 threads:")
    print(f"  evaluate_actions + backward, 512 samples: {_median(loss_512) * 1e3:.1f} ms")
    print(f"  evaluate_actions + backward, {args.large_batch} samples: {_median(loss_large):.2f} s")
    print(f"  sampling (policy.forward) of 40 observations: {_median(sampling):.3f} ms")
    print(
        "\nmemory of a 2M-env-step run (zoo Hopper-v4 settings, computed): "
        f"rollout buffer {memory['rollout_buffer']:.2f} MiB, model parameters {memory['model_params']:.2f} MiB "
        f"(with gradients and AdamW moments {memory['model_total']:.2f} MiB)"
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this benchmark process (measured; set by the {args.large_batch}-sample batch): {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
