"""
The package's own errors, for the failures a caller may want to tell apart from a bug: a policy file that cannot be
loaded, and a training update that went non-finite. Both subclass the built-in error a caller would catch anyway.
"""


class PolicyFileError(ValueError):
    """A pretrained-policy file is malformed, corrupted or out of bounds; the message names the file and the value."""


class NonFiniteTrainingError(FloatingPointError):
    """
    A PPO update produced a non-finite loss term, gradient or parameter. The update was undone: the policy and its
    optimizer hold the weights from before it.

    :param message: what went non-finite, at which update, and the fix
    :param term: the term that went non-finite: ``"reward"``, ``"value"``, ``"advantage"``, ``"policy gradient"``,
        ``"entropy"``, ``"BC"``, ``"consistency"``, ``"loss"``, ``"gradient"`` or ``"parameter"``
    :param update: the number of the update (``_n_updates`` before it)
    """

    def __init__(self, message: str, term: str = "", update: int = -1) -> None:
        super().__init__(message)
        self.term = term
        self.update = update
