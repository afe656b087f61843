"""Progress bars that respect where their output goes."""

from typing import Any


def progress_bar_kwargs(enabled: bool) -> dict[str, Any]:
    """
    ``tqdm`` arguments for an optional progress bar: off when not asked for, and off too when stderr is not a terminal
    (``disable=None``: a piped or redirected log gets no carriage-return frames); at most one refresh a second.

    :param enabled: the user's choice (e.g. ``--progress-bar`` / ``--no-progress-bar``)
    :return: keyword arguments for ``tqdm``
    """
    return {"disable": None if enabled else True, "mininterval": 1.0}
