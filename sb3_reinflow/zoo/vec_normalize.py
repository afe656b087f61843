"""VecNormalize statistics saved atomically (the zoo saves them next to every checkpoint)."""

from typing import Any

from stable_baselines3.common.vec_env import VecNormalize

from sb3_reinflow.common.save_util import atomic_pickle


class AtomicVecNormalize(VecNormalize):
    """
    A VecNormalize whose ``save`` is atomic (:func:`~sb3_reinflow.common.save_util.atomic_write`). It pickles as
    a plain ``VecNormalize``, so its files load anywhere with ``VecNormalize.load``. Like every pickle, such a file
    must come from a trusted source.
    """

    def save(self, save_path: str) -> None:
        """
        :param save_path: destination file, used exactly as given
        """
        self.__class__ = VecNormalize  # pickled under SB3's class name
        try:
            atomic_pickle(self, save_path)
        finally:
            self.__class__ = AtomicVecNormalize


def make_atomic(env: Any) -> Any:
    """
    :param env: a VecEnv
    :return: the same env; a plain VecNormalize becomes an :class:`AtomicVecNormalize` (no state changes)
    """
    if type(env) is VecNormalize:
        env.__class__ = AtomicVecNormalize
    return env
