"""
Evaluation that shows every way a flow policy can act: the deployed deterministic mode (SB3's ``eval/mean_reward``)
and, beside it, the other evaluation protocols of the same policy at the same point of training.
"""

import os
from typing import Any, Literal, NamedTuple

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import sync_envs_normalization

from sb3_reinflow.common.save_util import atomic_write

EvalProtocol = Literal["mean", "median", "medoid", "zero", "random", "stochastic"]
EVAL_PROTOCOLS: tuple[str, ...] = ("mean", "median", "medoid", "zero", "random", "stochastic")


class EpisodeOutcomes(NamedTuple):
    """
    What the evaluation episodes of one protocol gave.

    :param returns: one return per episode
    :param successes: ``info["is_success"]`` at the end of each episode (empty when the env does not report it)
    :param n_completed: ``info["n_completed"]`` (subtasks done, e.g. the kitchen's) at the end of each episode
        (empty when the env does not report it)
    """

    returns: list[float]
    successes: list[bool]
    n_completed: list[float]


def _final_info_recorder(successes: list[bool], n_completed: list[float]) -> Any:
    """:return: an ``evaluate_policy`` callback appending each finished episode's ``is_success``/``n_completed``"""

    def record(locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        if not locals_["done"]:
            return
        info = locals_["info"]
        if "is_success" in info:
            successes.append(bool(info["is_success"]))
        if "n_completed" in info:
            n_completed.append(float(info["n_completed"]))

    return record


def evaluate_protocol(
    model: Any, env: Any, protocol: str, n_eval_episodes: int, warn: bool = True, callback: Any = None
) -> EpisodeOutcomes:
    """
    Evaluation episodes of a flow policy under one protocol, passed to ``predict`` as the deterministic mode of each
    call (the policy's own ``deterministic_mode`` is left as it is).

    :param model: a model whose policy has ``deterministic_mode`` (ReinFlowPPO, or PPO with ReinFlowPolicy)
    :param env: the evaluation env
    :param protocol: one of :data:`EVAL_PROTOCOLS`
    :param n_eval_episodes: number of episodes
    :param warn: SB3's warning about a missing Monitor wrapper
    :param callback: also called at each step, as ``evaluate_policy``'s callback
    :return: returns, and success / subtasks completed where the env reports them
    """
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {EVAL_PROTOCOLS}")
    successes: list[bool] = []
    n_completed: list[float] = []
    record = _final_info_recorder(successes, n_completed)

    def on_step(locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        record(locals_, globals_)
        if callback is not None:
            callback(locals_, globals_)

    rewards, _ = evaluate_policy(
        model,
        env,
        n_eval_episodes=n_eval_episodes,
        deterministic=False if protocol == "stochastic" else protocol,  # type: ignore[arg-type]  # ReinFlowPolicy._predict
        return_episode_rewards=True,
        warn=warn,
        callback=on_step,
    )
    return EpisodeOutcomes([float(reward) for reward in rewards], successes, n_completed)  # type: ignore[union-attr]


class ProtocolEvalCallback(EvalCallback):
    """
    SB3's :class:`EvalCallback` (the deployed deterministic mode decides ``eval/mean_reward`` and ``best_model.zip``)
    that also evaluates the policy under the other protocols at each evaluation:

    - ``"mean"``: the expected action of the noisy chain (``deterministic_mode="mean"``);
    - ``"median"``: the per-coordinate median of such noisy chains (``deterministic_mode="median"``);
    - ``"medoid"``: the one of those chains whose final action is closest to the others' (``"medoid"``);
    - ``"zero"``: the noise-free chain from x_0 = 0;
    - ``"random"``: the noise-free chain from x_0 ~ N(0, I) (ReinFlow's own evaluation);
    - ``"stochastic"``: the noisy chain that PPO trains (``deterministic=False``).

    Each protocol other than the deployed one is logged as ``eval/mean_reward_<protocol>`` and stored in
    ``evaluations.npz`` as ``results_<protocol>`` (episode returns, shape (n_evaluations, n_eval_episodes)), next to
    SB3's ``timesteps``/``results``/``ep_lengths``/``successes`` and the deployed mode (``deterministic_mode``).
    Where the env reports them (the kitchen), success and subtasks completed are logged too: SB3's
    ``eval/success_rate`` and ``eval/n_completed`` for the deployed mode, ``eval/success_rate_<protocol>`` and
    ``eval/n_completed_<protocol>`` for the others, stored as ``successes[_<protocol>]`` and
    ``n_completed[_<protocol>]``.

    With ``all_protocols_freq`` (timesteps), ``protocols`` are those evaluated at every evaluation, and every protocol
    is evaluated at the evaluations that reach a multiple of it (choose one that divides the run's length, so the
    last evaluation has them all): the protocols that matter during a long run, all of them at its milestones. An
    evaluation that skips a protocol stores a row of NaN in its arrays.

    :param eval_env: the evaluation env
    :param protocols: protocols to evaluate besides the deployed one (it is skipped if listed)
    :param all_protocols_freq: evaluate every protocol at the evaluations that reach a multiple of this many
        timesteps (0: only ``protocols``, at every evaluation)
    :param kwargs: :class:`EvalCallback` arguments
    """

    def __init__(
        self, eval_env: Any, protocols: tuple[str, ...] = EVAL_PROTOCOLS, all_protocols_freq: int = 0, **kwargs: Any
    ) -> None:
        unknown = [name for name in protocols if name not in EVAL_PROTOCOLS]
        if unknown:
            raise ValueError(f"protocols={protocols!r}: {unknown} not in {EVAL_PROTOCOLS}")
        if not isinstance(all_protocols_freq, int) or all_protocols_freq < 0:
            raise ValueError(f"all_protocols_freq={all_protocols_freq!r} must be a whole number of timesteps >= 0 (0: never)")
        super().__init__(eval_env, **kwargs)
        self.protocols = tuple(protocols)
        self.all_protocols_freq = all_protocols_freq
        tracked = EVAL_PROTOCOLS if all_protocols_freq else self.protocols
        self.protocol_results: dict[str, list[EpisodeOutcomes]] = {name: [] for name in tracked}
        self.evaluations_n_completed: list[list[float]] = []
        self._n_completed_buffer: list[float] = []

    @classmethod
    def from_eval_callback(
        cls, callback: EvalCallback, protocols: tuple[str, ...] = EVAL_PROTOCOLS, all_protocols_freq: int = 0
    ) -> "ProtocolEvalCallback":
        """
        :param callback: an :class:`EvalCallback` not yet started (as rl_zoo3 builds it)
        :param protocols: see the class
        :param all_protocols_freq: see the class
        :return: a callback with the same settings that also evaluates ``protocols``
        """
        log_dir = None if callback.log_path is None else os.path.dirname(callback.log_path)
        return cls(
            callback.eval_env,
            protocols=protocols,
            all_protocols_freq=all_protocols_freq,
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
            self._n_completed_buffer = []
            continue_training = super()._on_step()
            if self._n_completed_buffer:
                self.evaluations_n_completed.append(self._n_completed_buffer)
            self._save_protocol_results()
            return continue_training
        return super()._on_step()

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        info = locals_["info"]
        if locals_["done"] and "n_completed" in info:
            self._n_completed_buffer.append(float(info["n_completed"]))
            # SB3 dumps the logger right after its evaluation: the last episode's record holds the mean of all
            self.logger.record("eval/n_completed", float(np.mean(self._n_completed_buffer)))

    @property
    def deployed_mode(self) -> str:
        """The policy's deterministic mode, which SB3's evaluation uses."""
        return self.model.policy.deterministic_mode  # type: ignore[union-attr]

    def _reaches_all_protocols_milestone(self) -> bool:
        """Whether this evaluation is the first to reach a multiple of ``all_protocols_freq`` timesteps."""
        if not self.all_protocols_freq:
            return False
        previous = self.num_timesteps - self.eval_freq * self.training_env.num_envs
        return self.num_timesteps // self.all_protocols_freq > previous // self.all_protocols_freq

    def _evaluate_protocols(self) -> None:
        milestone = self._reaches_all_protocols_milestone()
        for name in self.protocol_results:
            if name == self.deployed_mode:
                continue
            if name not in self.protocols and not milestone:
                self.protocol_results[name].append(EpisodeOutcomes([], [], []))
                continue
            outcomes = self._evaluate(name)
            self.protocol_results[name].append(outcomes)
            self.logger.record(f"eval/mean_reward_{name}", float(np.mean(outcomes.returns)))
            if outcomes.successes:
                self.logger.record(f"eval/success_rate_{name}", float(np.mean(outcomes.successes)))
            if outcomes.n_completed:
                self.logger.record(f"eval/n_completed_{name}", float(np.mean(outcomes.n_completed)))
            if self.verbose >= 1:
                print(f"Eval ({name}): episode_reward={np.mean(outcomes.returns):.2f} +/- {np.std(outcomes.returns):.2f}")

    def _evaluate(self, protocol: str) -> EpisodeOutcomes:
        return evaluate_protocol(self.model, self.eval_env, protocol, self.n_eval_episodes, warn=self.warn)

    def _rows(self, rows: list[list]) -> np.ndarray:
        """One row per evaluation; an evaluation that skipped the protocol gives a row of NaN (float arrays then)."""
        if all(rows):
            return np.array(rows)
        return np.array([row if row else [np.nan] * self.n_eval_episodes for row in rows], dtype=float)

    def _save_protocol_results(self) -> None:
        if self.log_path is None:
            return
        arrays = {}
        for name, outcomes in self.protocol_results.items():
            if any(outcome.returns for outcome in outcomes):
                arrays[f"results_{name}"] = self._rows([outcome.returns for outcome in outcomes])
            if any(outcome.successes for outcome in outcomes):
                arrays[f"successes_{name}"] = self._rows([outcome.successes for outcome in outcomes])
            if any(outcome.n_completed for outcome in outcomes):
                arrays[f"n_completed_{name}"] = self._rows([outcome.n_completed for outcome in outcomes])
        if self.evaluations_successes:
            arrays["successes"] = np.array(self.evaluations_successes)
        if self.evaluations_n_completed:
            arrays["n_completed"] = np.array(self.evaluations_n_completed)
        with atomic_write(f"{self.log_path}.npz") as handle:  # SB3's own file name (np.savez adds .npz)
            np.savez(
                handle,
                timesteps=self.evaluations_timesteps,
                results=self.evaluations_results,
                ep_lengths=self.evaluations_length,
                deterministic_mode=self.deployed_mode,
                **arrays,
            )


class EnvStepCounter(BaseCallback):
    """
    Counts env steps (``info["chunk_steps"]`` per action chunk, 1 without chunks) into the model's ``_num_env_steps``
    and logs them as ``time/total_env_steps`` at the end of each rollout (``time/total_timesteps`` counts policy
    steps). ReinFlowPPO.learn adds it before the user's callbacks.
    """

    def _on_step(self) -> bool:
        self.model._num_env_steps += sum(int(info.get("chunk_steps", 1)) for info in self.locals["infos"])
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("time/total_env_steps", self.model._num_env_steps, exclude="tensorboard")
