"""
The rl_zoo3 plugin (:mod:`sb3_reinflow.zoo.plugin`) and its hook-free entry points
(``python -m sb3_reinflow.zoo.train``, ``.enjoy``, ``.record_video``).
"""

from sb3_reinflow.zoo.plugin import (
    ALGO_NAME,
    ENV_PROVIDERS,
    check_registry_entry,
    check_top_level_keys,
    hyperparams_path,
    import_env_provider,
    register,
    use_registry_env_kwargs_for_evaluation,
    watch_env_wrappers,
)

__all__ = [
    "ALGO_NAME",
    "ENV_PROVIDERS",
    "check_registry_entry",
    "check_top_level_keys",
    "hyperparams_path",
    "import_env_provider",
    "register",
    "use_registry_env_kwargs_for_evaluation",
    "watch_env_wrappers",
]
