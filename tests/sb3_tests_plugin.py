"""
Pytest plugin for ``tests/run_sb3_tests.py``: runs Stable-Baselines3's own tests with ``stable_baselines3.PPO``
replaced by a ReinFlow stand-in, keeps only the tests that use PPO, and classifies failures.

Loaded with ``-p sb3_tests_plugin`` (``tests/`` on ``PYTHONPATH``) before SB3's test modules are imported, so
their ``from stable_baselines3 import PPO`` binds the stand-in. Settings come from environment variables:

- ``SB3_COMPAT_STAND_IN``: ``"reinflow_ppo"`` (``ReinFlowPPO``) or ``"stock_ppo"`` (SB3's ``PPO`` with
  ``ReinFlowPolicy`` and a ``ChainRolloutBuffer``, the README's recipe);
- ``SB3_COMPAT_RESULTS``: JSON file the per-test results are written to.

A failure is *expected* when its error is one of the package's clear "not supported" errors
(``UNSUPPORTED_ERRORS``) or the test is in ``ASSUMPTIONS`` (a test assumption that does not hold for a flow
policy, with the reason). Expected failures are reported as xfail, so pytest's exit code counts only the others.
"""

import functools
import inspect
import json
import os
import re
import traceback
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import stable_baselines3
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

import sb3_reinflow
from sb3_reinflow import ChainRolloutBuffer, ReinFlowPolicy, ReinFlowPPO
from sb3_reinflow.reinflow_ppo.policies import CnnPolicy, MultiInputPolicy

STAND_INS = ("reinflow_ppo", "stock_ppo")
PACKAGE_DIR = str(Path(sb3_reinflow.__file__).resolve().parent)
OTHER_ALGORITHMS = frozenset({"a2c", "ddpg", "dqn", "her", "sac", "td3"})


class Expectation(NamedTuple):
    """
    A documented reason for an SB3 test to fail with a stand-in.

    :param pattern: regular expression matched (``re.search``) against the test id, e.g. ``test_run.py::test_x``
    :param stand_ins: the stand-ins it applies to
    :param reason: why the test's assumption does not hold for a flow policy
    """

    pattern: str
    stand_ins: tuple[str, ...]
    reason: str


# The package's deliberate "not supported" errors: (message pattern, what is unsupported).
UNSUPPORTED_ERRORS: tuple[tuple[str, str], ...] = (
    (r"ReinFlowPolicy supports Box action spaces", "Discrete / MultiDiscrete / MultiBinary actions"),
    (r"supports Box observation spaces", "non-Box (Dict, Discrete...) observations"),
    (r"use_sde=True is not supported", "gSDE exploration"),
    (r"does not apply to ReinFlowPolicy", "Gaussian-policy options"),
    (r"ReinFlowPPO needs a ReinFlowPolicy", "ReinFlowPPO with a non-flow policy"),
)

# Test assumptions that do not hold for a flow policy (see docs/sb3_compat.md).
ASSUMPTIONS: tuple[Expectation, ...] = (
    Expectation(
        r"test_identity\.py::test_continuous\[",
        ("reinflow_ppo",),
        "learning-speed threshold tuned for Gaussian PPO from scratch; ReinFlowPPO's defaults (clip 0.01, actor "
        "learning rate 4.5e-5) are made for fine-tuning a pretrained flow policy",
    ),
    Expectation(
        r"test_identity\.py::test_continuous\[",
        ("stock_ppo",),
        "learning-speed threshold tuned for Gaussian PPO from scratch; after its 1,000 steps (seed 0) the flow policy's "
        "deterministic action (deterministic_mode='mean', the mean of noisy chains) scores 78 < 90; the "
        "noise-free chain from x_0 = 0 (deterministic_mode='zero') passes",
    ),
    Expectation(
        r"test_save_load\.py::test_save_load_clip_range_portable\[",
        ("reinflow_ppo",),
        "checks PPO's default clip_range 0.2; ReinFlowPPO's default is the paper's 0.01",
    ),
    Expectation(
        r"test_save_load\.py::test_save_load_policy\[False-",
        STAND_INS,
        "sets every parameter and buffer to random values in [0, 1), the policy's action bounds included, then saves and "
        "reloads the policy on its own; a policy file whose action_low exceeds its action_high is refused on load "
        "(PolicyFileError naming the tensor), as docs/reliability.md promises",
    ),
    Expectation(
        r"test_run\.py::test_ppo_warnings$",
        STAND_INS,
        "expects the 'use the CPU' hint, which SB3 gives only for its Gaussian ActorCriticPolicy; a flow policy runs "
        "its velocity net K times per step and can gain from a GPU",
    ),
    Expectation(
        r"test_sde\.py::test_only_sde_squashed$",
        STAND_INS,
        "expects squash_output=True to be refused without gSDE; a flow policy's outputs are always squashed to "
        "[-1, 1], so squash_output=True is accepted (squash_output=False is refused)",
    ),
)


class _State:
    """Per-session state: the stand-in class, whether the running test built it, and the results."""

    stand_in_name: str = ""
    stand_in: type[BaseAlgorithm] | None = None
    built = False
    results: dict[str, dict[str, Any]] = {}  # noqa: RUF012
    used_assumptions: set[str] = set()  # noqa: RUF012


class StockPPOWithReinFlowPolicy(PPO):
    """
    SB3's own ``PPO``, set up the way the README tells users to: the policy aliases are ReinFlow policies, and
    rollouts go to a ``ChainRolloutBuffer`` sized for the policy's chain. Only defaults are filled in; training,
    saving and loading are stock ``PPO``. A test that passes its own (Gaussian) policy class gets plain ``PPO``
    and is not counted.
    """

    policy_aliases = {"MlpPolicy": ReinFlowPolicy, "CnnPolicy": CnnPolicy, "MultiInputPolicy": MultiInputPolicy}  # noqa: RUF012

    def __init__(self, policy: Any, env: Any, *args: Any, **kwargs: Any) -> None:
        flow_policy = isinstance(policy, str) or (isinstance(policy, type) and issubclass(policy, ReinFlowPolicy))
        _State.built = _State.built or flow_policy
        if flow_policy and kwargs.get("rollout_buffer_class") is None and kwargs.get("_init_setup_model", True):
            n_flow_steps = (kwargs.get("policy_kwargs") or {}).get("n_flow_steps", 4)
            kwargs["rollout_buffer_class"] = ChainRolloutBuffer
            kwargs["rollout_buffer_kwargs"] = {"chain_length": n_flow_steps + 1, **(kwargs.get("rollout_buffer_kwargs") or {})}
        super().__init__(policy, env, *args, **kwargs)


def _recording(init: Any) -> Any:
    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        _State.built = True
        init(self, *args, **kwargs)

    return wrapper


def _install_stand_in(name: str) -> None:
    if name not in STAND_INS:
        raise ValueError(f"SB3_COMPAT_STAND_IN={name!r} is not one of {STAND_INS}")
    stand_in = ReinFlowPPO if name == "reinflow_ppo" else StockPPOWithReinFlowPolicy
    if stand_in is ReinFlowPPO:
        stand_in.__init__ = _recording(stand_in.__init__)  # type: ignore[method-assign]
    stable_baselines3.PPO = stand_in  # type: ignore[misc]
    stable_baselines3.ppo.PPO = stand_in  # type: ignore[misc]
    _State.stand_in_name, _State.stand_in = name, stand_in


_install_stand_in(os.environ.get("SB3_COMPAT_STAND_IN", "reinflow_ppo"))


def _uses_ppo(item: pytest.Item) -> bool:
    """Keep tests parametrised with the stand-in, and unparametrised tests that mention PPO."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    algorithms = [value for value in params.values() if isinstance(value, type) and issubclass(value, BaseAlgorithm)]
    if algorithms:
        return _State.stand_in in algorithms
    names = {value.lower() for value in params.values() if isinstance(value, str)}
    if names & OTHER_ALGORITHMS:
        return False
    if "ppo" in names:
        return True
    function = getattr(item, "function", None)
    return function is not None and "PPO" in inspect.getsource(function)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = [item for item in items if _uses_ppo(item)]
    deselected = [item for item in items if not _uses_ppo(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    _State.built = False
    yield


def _unsupported(error: BaseException | None) -> str | None:
    """
    :param error: the exception a test failed with
    :return: what is unsupported, when the error, or one it was raised while handling (e.g. a ``pytest.warns``
        block left by the error), is one of the package's "not supported" errors raised in the package
    """
    while error is not None:
        frames = traceback.extract_tb(error.__traceback__)
        if any(str(Path(frame.filename).resolve()).startswith(PACKAGE_DIR) for frame in frames):
            for pattern, what in UNSUPPORTED_ERRORS:
                if re.search(pattern, str(error)):
                    return what
        error = error.__cause__ or error.__context__
    return None


def _expected_reason(nodeid: str, excinfo: Any) -> tuple[str, str] | None:
    """
    :return: (kind, reason) when the failure is expected: kind ``"unsupported"`` or ``"assumption"``
    """
    what = _unsupported(excinfo.value if excinfo is not None else None)
    if what is not None:
        return "unsupported", what
    for expectation in ASSUMPTIONS:
        if _State.stand_in_name in expectation.stand_ins and re.search(expectation.pattern, nodeid):
            _State.used_assumptions.add(expectation.pattern)
            return "assumption", expectation.reason
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    record = _State.results.setdefault(item.nodeid, {"outcome": "passed", "built": False, "reason": ""})
    record["built"] = record["built"] or _State.built
    if report.skipped and record["outcome"] == "passed":
        record["outcome"], record["reason"] = "skipped", str(report.longrepr[-1]) if report.longrepr else ""
    if not report.failed:
        return
    expected = _expected_reason(item.nodeid, call.excinfo)
    if expected is None:
        message = call.excinfo.exconly().splitlines()[0][:300] if call.excinfo is not None else report.when
        record["outcome"], record["reason"] = "failed", message
        return
    kind, reason = expected
    record["outcome"], record["reason"] = kind, reason
    report.outcome = "skipped"
    report.wasxfail = f"{kind}: {reason}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("SB3_COMPAT_RESULTS")
    if path:
        unused = [
            expectation.pattern
            for expectation in ASSUMPTIONS
            if _State.stand_in_name in expectation.stand_ins and expectation.pattern not in _State.used_assumptions
        ]
        results = {"stand_in": _State.stand_in_name, "tests": _State.results, "unused_assumptions": unused}
        Path(path).write_text(json.dumps(results, indent=1))
