"""ReinFlow-aware Optuna sampler for rl_zoo3's ``-optimize``; it keeps the pretrained policy (``pretrained_policy``)."""

from typing import Any

import optuna


def sample_reinflow_ppo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sample ReinFlowPPO hyperparameters: actor and critic learning rates, clip range, entropy coefficient,
    n_steps, epochs, number of flow steps K and the noise-std bounds. ``policy_kwargs`` holds only the sampled
    keys; the pretrained checkpoint supplies the rest of the architecture.

    :param trial: Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of envs (unused)
    :param additional_args: rl_zoo3 extras (unused)
    :return: ReinFlowPPO keyword arguments
    """
    sampled = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "critic_learning_rate": trial.suggest_float("critic_learning_rate", 1e-4, 3e-3, log=True),
        "clip_range": trial.suggest_categorical("clip_range", [0.005, 0.01, 0.02, 0.05, 0.1]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-4, 0.1, log=True),
        "n_steps_pow": trial.suggest_int("n_steps_pow", 6, 10),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 3, 5, 10]),
        "n_flow_steps": trial.suggest_categorical("n_flow_steps", [1, 2, 4]),
        "min_noise_std": trial.suggest_float("min_noise_std", 0.02, 0.15, log=True),
        "noise_std_ratio": trial.suggest_float("noise_std_ratio", 1.2, 4.0),
    }
    trial.set_user_attr("n_steps", 2 ** sampled["n_steps_pow"])
    trial.set_user_attr("max_noise_std", sampled["min_noise_std"] * sampled["noise_std_ratio"])
    return convert_reinflow_ppo_params(sampled)


def convert_reinflow_ppo_params(sampled: dict[str, Any]) -> dict[str, Any]:
    """
    Turn sampled (or a study's best) parameters into ReinFlowPPO keyword arguments.

    :param sampled: the trial's parameters
    :return: ReinFlowPPO keyword arguments
    """
    params = dict(sampled)
    if "n_steps_pow" in params:
        params["n_steps"] = 2 ** params.pop("n_steps_pow")
    policy_kwargs = {}
    if "n_flow_steps" in params:
        policy_kwargs["n_flow_steps"] = params.pop("n_flow_steps")
    if "min_noise_std" in params:
        min_std = params.pop("min_noise_std")
        policy_kwargs.update(min_noise_std=min_std, max_noise_std=min_std * params.pop("noise_std_ratio", 2.4))
    if policy_kwargs:
        params["policy_kwargs"] = policy_kwargs
    return params
