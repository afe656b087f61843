"""Command-line tools, each run as ``python -m sb3_reinflow.tools.<name>`` (``--help`` lists the options)."""

import argparse
import json
from typing import Any

from sb3_reinflow.common.policy_json import policy_kwargs_from_json


def policy_kwargs_argument(text: str) -> dict[str, Any]:
    """
    The ``type`` of a ``--policy-kwargs`` option: :func:`~sb3_reinflow.common.policy_json.policy_kwargs_from_json`,
    with its message shown by argparse (which replaces a plain ``ValueError``'s by "invalid value").

    :param text: the option's JSON
    :return: the policy arguments, classes named by ``"Mish"`` or ``{"class": "torch.nn.Mish"}`` resolved
    """
    try:
        return policy_kwargs_from_json(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({error}); quote it, e.g. '{{\"obs_clip\": 5.0}}'") from error
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
