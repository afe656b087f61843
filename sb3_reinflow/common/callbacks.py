"""
Evaluation that shows every way a flow policy can act: the deployed deterministic mode (SB3's ``eval/mean_reward``)
and, beside it, the other evaluation protocols of the same policy at the same point of training.
"""

import os
from typing import Any, Literal

import numpy as np
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import sync_envs_normalization

EvalProtocol = Literal["mean", "zero", "random", "stochastic"]
EVAL_PROTOCOLS: tuple[str, ...] = ("mean", "zero", "random", "stochastic")


def evaluate_protocol(model: Any, env: Any, protocol: str, n_eval_episodes: int, warn: bool = True) -> list[float]:
    """
    Episode returns of a flow policy under one evaluation protocol; the policy's deterministic mode is restored after.

    :param model: a model whose policy has ``deterministic_mode`` (ReinFlowPPO, or PPO with ReinFlowPolicy)
    :param env: the evaluation env
    :param protocol: one of :data:`EVAL_PROTOCOLS`
    :param n_eval_episodes: number of episodes
    :param warn: SB3's warning about a missing Monitor wrapper
    :return: one return per episode
    """
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {EVAL_PROTOCOLS}")
    policy = model.policy
    deployed = policy.deterministic_mode
    if protocol != "stochastic":
        policy.deterministic_mode = protocol
    try:
        rewards, _ = evaluate_policy(
            model,
            env,
            n_eval_episodes=n_eval_episodes,
            deterministic=protocol != "stochastic",
            return_episode_rewards=True,
            warn=warn,
        )
    finally:
        policy.deterministic_mode = deployed
    return [float(reward) for reward in rewards]  # type: ignore[union-attr]


class ProtocolEvalCallback(EvalCallback):
    """
    SB3's :class:`EvalCallback` (the deployed deterministic mode decides ``eval/mean_reward`` and ``best_model.zip``)
    that also evaluates the policy under the other protocols at each evaluation:

    - ``"mean"``: the expected action of the noisy chain (``deterministic_mode="mean"``);
    - ``"zero"``: the noise-free chain from x_0 = 0;
    - ``"random"``: the noise-free chain from x_0 ~ N(0, I) (ReinFlow's own evaluation);
    - ``"stochastic"``: the noisy chain that PPO trains (``deterministic=False``).

    Each protocol other than the deployed one is logged as ``eval/mean_reward_<protocol>`` and stored in
    ``evaluations.npz`` as ``results_<protocol>`` (episode returns, shape (n_evaluations, n_eval_episodes)), next to
    SB3's ``timesteps``/``results``/``ep_lengths`` and the deployed mode (``deterministic_mode``).

    :param eval_env: the evaluation env
    :param protocols: protocols to evaluate besides the deployed one (it is skipped if listed)
    :param kwargs: :class:`EvalCallback` arguments
    """

    def __init__(self, eval_env: Any, protocols: tuple[str, ...] = EVAL_PROTOCOLS, **kwargs: Any) -> None:
        unknown = [name for name in protocols if name not in EVAL_PROTOCOLS]
        if unknown:
            raise ValueError(f"protocols={protocols!r}: {unknown} not in {EVAL_PROTOCOLS}")
        super().__init__(eval_env, **kwargs)
        self.protocols = tuple(protocols)
        self.protocol_results: dict[str, list[list[float]]] = {name: [] for name in self.protocols}

    @classmethod
    def from_eval_callback(cls, callback: EvalCallback, protocols: tuple[str, ...] = EVAL_PROTOCOLS) -> "ProtocolEvalCallback":
        """
        :param callback: an :class:`EvalCallback` not yet started (as rl_zoo3 builds it)
        :param protocols: see the class
        :return: a callback with the same settings that also evaluates ``protocols``
        """
        log_dir = None if callback.log_path is None else os.path.dirname(callback.log_path)
        return cls(
            callback.eval_env,
            protocols=protocols,
            callback_on_new_best=callback.callback_on_new_best,
            callback_after_eval=callback.callback,
            n_eval_episodes=callback.n_eval_episodes,
            eval_freq=callback.eval_freq,
            log_path=log_dir,
            best_model_save_path=callback.best_model_save_path,
            deterministic=callback.deterministic,
            render=callback.render,
            verbose=callback.verbose,
            warn=callback.warn,
        )

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            if self.model.get_vec_normalize_env() is not None:
                sync_envs_normalization(self.training_env, self.eval_env)
            self._evaluate_protocols()  # recorded before SB3's evaluation dumps the logger
            continue_training = super()._on_step()
            self._save_protocol_results()
            return continue_training
        return super()._on_step()

    @property
    def deployed_mode(self) -> str:
        """The policy's deterministic mode, which SB3's evaluation uses."""
        return self.model.policy.deterministic_mode  # type: ignore[union-attr]

    def _evaluate_protocols(self) -> None:
        for name in self.protocols:
            if name == self.deployed_mode:
                continue
            rewards = self._evaluate(name)
            self.protocol_results[name].append(rewards)
            self.logger.record(f"eval/mean_reward_{name}", float(np.mean(rewards)))
            if self.verbose >= 1:
                print(f"Eval ({name}): episode_reward={np.mean(rewards):.2f} +/- {np.std(rewards):.2f}")

    def _evaluate(self, protocol: str) -> list[float]:
        return evaluate_protocol(self.model, self.eval_env, protocol, self.n_eval_episodes, warn=self.warn)

    def _save_protocol_results(self) -> None:
        if self.log_path is None:
            return
        arrays = {f"results_{name}": np.array(results) for name, results in self.protocol_results.items() if results}
        np.savez(
            self.log_path,
            timesteps=self.evaluations_timesteps,
            results=self.evaluations_results,
            ep_lengths=self.evaluations_length,
            deterministic_mode=self.deployed_mode,
            **arrays,
        )
