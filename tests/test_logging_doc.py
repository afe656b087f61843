"""docs/logging.md documents every key a ReinFlowPPO run logs (SB3's and ours), so the page cannot drift."""

import re
from pathlib import Path

from stable_baselines3.common.env_util import make_vec_env

from sb3_reinflow import ActionChunkWrapper, ReinFlowPPO
from sb3_reinflow.common.reinflow.callbacks import ProtocolEvalCallback

DOC = Path(__file__).resolve().parents[1] / "docs" / "logging.md"
TABLE_ROW = re.compile(r"^\| `([a-z0-9_/<>]+)` \|", re.MULTILINE)


def documented_keys() -> set[str]:
    """The first column of every table row of docs/logging.md."""
    return set(TABLE_ROW.findall(DOC.read_text()))


def test_doc_lists_every_logged_key(record_logs):
    """A short run that exercises every optional key: critic warm-up, BC term, value clipping, evaluation."""
    env_kwargs = dict(n_envs=1, wrapper_class=ActionChunkWrapper, wrapper_kwargs=dict(horizon=2))
    model = ReinFlowPPO(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", seed=0, **env_kwargs),
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        critic_warmup_iterations=1,
        bc_coef=0.1,
        clip_range_vf=0.2,
        noise_std_schedule="learn_decay",
        policy_kwargs=dict(velocity_net_arch=[16], noise_net_arch=[8], net_arch=[16], n_flow_steps=1),
        seed=0,
    )
    dumps = record_logs(model)
    eval_callback = ProtocolEvalCallback(make_vec_env("Pendulum-v1", seed=1, **env_kwargs), eval_freq=64, n_eval_episodes=1)
    model.learn(192, callback=eval_callback)  # 384 env steps: one finished 200-step episode, three updates
    logged = {re.sub(r"_step\d+$", "_step<k>", key) for key in set().union(*dumps)}
    # the run did reach every family of keys
    assert {"rollout/ep_len_mean", "eval/mean_reward", "train/bc_loss", "time/total_env_steps"} <= logged
    assert {"eval/mean_reward_zero", "eval/mean_reward_stochastic", "train/noise_std_step<k>"} <= logged
    undocumented = logged - documented_keys()
    assert not undocumented, f"add these keys to docs/logging.md: {sorted(undocumented)}"


def test_doc_table_is_parsed():
    keys = documented_keys()
    assert {"train/learning_rate", "train/critic_learning_rate", "time/total_timesteps", "eval/mean_ep_length"} <= keys
    assert "train/actor_learning_rate" not in keys  # one name per quantity: train/learning_rate is the actor's
