"""SB3's ``load`` for ReinFlowPPO: the same code, with a docstring that says what loading a zip runs."""

import types

from stable_baselines3 import PPO


def sb3_load_with_security_note() -> classmethod:
    """SB3's ``load``, the same code object (not an override), with a docstring that starts with what loading runs."""
    sb3_load = PPO.load.__func__  # type: ignore[attr-defined]
    load = types.FunctionType(sb3_load.__code__, sb3_load.__globals__, "load", sb3_load.__defaults__, sb3_load.__closure__)
    load.__kwdefaults__, load.__annotations__ = sb3_load.__kwdefaults__, dict(sb3_load.__annotations__)
    load.__qualname__, load.__module__ = "ReinFlowPPO.load", __name__
    load.__doc__ = (
        "SB3's ``load``, unchanged. Security: a model zip is unpickled, so loading one RUNS CODE from the file; load "
        "only zips from a trusted source. To share a policy, use a pretrained-policy file (``model.policy.save("
        "'policy.safetensors')``, loaded with ``ReinFlowPPO.from_pretrained``), which never runs code.\n"
        + (sb3_load.__doc__ or "")
    )
    return classmethod(load)
