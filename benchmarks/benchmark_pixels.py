"""
Costs of ReinFlow from pixels on this machine, measured in one run (the machine may be shared: compare only numbers
printed by the same run):

- env steps/s of each robosuite task with one 84x84 camera rendered once per Ta=4 chunk (``render_every=4``) against
  rendered at every step (random actions, 1 torch thread, the two settings alternating);
- one PPO update of the registry's pixel settings (MultiInputPolicy, K=1, two NatureCNN encoders, 10 epochs of
  256-sample minibatches), in seconds per 1,000 samples per epoch, against the same update of an MLP policy on the
  9-d state alone (the encoders' share of the cost);
- the rollout's memory (uint8 images, chains) and the model's size for the registry's PixelCan-v0 settings, and the
  peak resident memory of this process;
- with ``--vit``: forward + backward of a ViT encoder of ReinFlow's shape (conv 8/4 and 3/2 patches, one transformer
  block of width 128 with 4 heads) against the NatureCNN, per sample at batch 256.

Usage: MUJOCO_GL=egl python benchmarks/benchmark_pixels.py [--steps 400] [--repeats 2] [--vit]
"""

import argparse
import resource
import time

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.envs.robosuite.pixel_env import RobosuitePixelEnv

IMAGE_SIZE = 84


def env_steps_per_second(task: str, render_every: int, n_steps: int) -> float:
    env = RobosuitePixelEnv(task, image_size=IMAGE_SIZE, render_every=render_every)
    env.reset(seed=0)
    for _ in range(20):  # warm-up (numba compiles robosuite's kernels on the first steps)
        env.step(env.action_space.sample())
    start = time.perf_counter()
    for _ in range(n_steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    rate = n_steps / (time.perf_counter() - start)
    env.close()
    return rate


def update_seconds_per_1000(policy: str, observation_space: spaces.Space, n_samples: int = 1024) -> float:
    import gymnasium as gym

    class Env(gym.Env):
        action_space = spaces.Box(-1, 1, (4, 7), np.float32)

        def __init__(self) -> None:
            self.observation_space = observation_space

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    model = ReinFlowPPO(
        policy,
        Env(),
        n_steps=n_samples,
        batch_size=256,
        n_epochs=10,
        seed=0,
        policy_kwargs=dict(n_flow_steps=1, min_noise_std=0.08, max_noise_std=0.14),
    )
    model.learn(n_samples)  # one rollout + one update, so everything is built and warm
    # a fresh rollout (train() augments and flattens the buffer it is given), then one timed update
    model._setup_learn(n_samples, reset_num_timesteps=False)
    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_samples)
    start = time.perf_counter()
    model.train()
    return (time.perf_counter() - start) / (n_samples * 10 / 1000)


def memory_report() -> None:
    from sb3_reinflow.common.reinflow.buffers import DictChainRolloutBuffer
    from sb3_reinflow.reinflow_ppo.policies import MultiInputPolicy

    observation_space = spaces.Dict(
        image=spaces.Box(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE), np.uint8), state=spaces.Box(-np.inf, np.inf, (9,), np.float32)
    )
    action_space = spaces.Box(-1, 1, (4, 7), np.float32)
    buffer = DictChainRolloutBuffer(256, observation_space, action_space, n_envs=2, chain_length=2)
    buffer_bytes = sum(array.nbytes for array in buffer.observations.values()) + buffer.actions.nbytes
    policy = MultiInputPolicy(observation_space, action_space, lambda _: 1e-4, n_flow_steps=1)
    parameters = sum(parameter.numel() for parameter in policy.parameters())
    print(f"rollout buffer (2 envs x 256 chunks, 84x84 uint8 images, K=1 chains): {buffer_bytes / 2**20:.1f} MiB")
    print(f"policy: {parameters / 1e6:.2f} M parameters ({parameters * 4 / 2**20:.1f} MiB float32, x3 with Adam's moments)")


def vit_against_cnn(batch: int = 256) -> None:
    class MinViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patches = nn.Sequential(nn.Conv2d(3, 128, 8, 4), nn.ReLU(), nn.Conv2d(128, 128, 3, 2))
            self.block = nn.TransformerEncoderLayer(128, 4, 512, batch_first=True, norm_first=True)

        def forward(self, x: th.Tensor) -> th.Tensor:
            tokens = self.patches(x).flatten(2).transpose(1, 2)
            return self.block(tokens).flatten(1)

    space = spaces.Box(0, 255, (3, 96, 96), np.uint8)
    for name, encoder in (("NatureCNN 96x96", NatureCNN(space, 256)), ("ViT (ReinFlow's shape) 96x96", MinViT())):
        images = th.rand(batch, 3, 96, 96)
        encoder(images).sum().backward()  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            encoder(images).sum().backward()
        print(f"{name}: {(time.perf_counter() - start) / 3 / batch * 1000:.2f} ms per sample (forward + backward)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="env steps per measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vit", action="store_true")
    args = parser.parse_args()
    th.set_num_threads(1)
    print("env steps/s, one 84x84 camera (random actions, 1 thread):")
    for task in ("Lift", "Can", "Square"):
        rates = {1: [], 4: []}
        for _ in range(args.repeats):
            for render_every in (4, 1):
                rates[render_every].append(env_steps_per_second(task, render_every, args.steps))
        print(f"  {task:6s} rendered per chunk: {np.median(rates[4]):6.1f}   rendered every step: {np.median(rates[1]):6.1f}")
    pixel_space = spaces.Dict(
        image=spaces.Box(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), state=spaces.Box(-np.inf, np.inf, (9,), np.float32)
    )
    state_space = spaces.Box(-np.inf, np.inf, (9,), np.float32)
    pixel = update_seconds_per_1000("MultiInputPolicy", pixel_space)
    state = update_seconds_per_1000("MlpPolicy", state_space)
    print(f"PPO update, s per 1,000 samples per epoch: pixels {pixel:.2f}, state only {state:.2f} (same run)")
    memory_report()
    if args.vit:
        vit_against_cnn()
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
