"""The layers of docs/architecture.md: every module has a floor, and no module imports a floor above its own."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sb3_reinflow"

GROUND, SB3_LAYER, BUILDERS, TOP = 0, 1, 2, 3
#: folder -> floor; a module's floor is that of the deepest folder that holds it (no module has its own entry)
LAYERS: dict[str, int] = {
    # ground floor: flow math, networks, losses, flow types; datasets; file formats, safe saving; envs
    "sb3_reinflow.common": GROUND,
    "sb3_reinflow.pretrained": GROUND,
    "sb3_reinflow.envs": GROUND,
    # SB3 layer: the policy, its arguments, rollout buffer, distribution, callbacks, and the algorithm
    "sb3_reinflow.common.reinflow": SB3_LAYER,
    "sb3_reinflow.reinflow_ppo": SB3_LAYER,
    # builders: pretraining, the official-checkpoint importer, demonstrations (they build or fill policies)
    "sb3_reinflow.pretraining": BUILDERS,
    # top: the package's public names, the zoo plugin, the command-line tools
    "sb3_reinflow": TOP,
    "sb3_reinflow.zoo": TOP,
    "sb3_reinflow.tools": TOP,
}
#: SB3 modules that hold (or import) algorithms: off limits for the ground floor
SB3_ALGORITHM_MODULES = (
    "stable_baselines3",  # the package itself imports every algorithm
    "stable_baselines3.common.base_class",
    "stable_baselines3.common.on_policy_algorithm",
    "stable_baselines3.common.off_policy_algorithm",
    "stable_baselines3.ppo",
    "sb3_contrib",
)


def layer_of(module: str) -> int | None:
    """
    :param module: a dotted module name inside the package
    :return: its floor (longest matching prefix of :data:`LAYERS`), None for a module outside the package
    """
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str) -> list[tuple[str, list[str]]]:
    """
    :param source: Python source
    :return: every import, top-level or inside a function, as (module, imported names)
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def upward_imports(module: str, source: str) -> list[str]:
    """
    :param module: the importing module's name
    :param source: its source
    :return: the imports of a floor above ``module``'s (``from pkg import submodule`` counts the submodule), and,
        on the ground floor, imports of SB3 algorithms
    """
    own = layer_of(module)
    assert own is not None, f"{module} has no floor: add it to LAYERS (see docs/architecture.md)"
    bad = []
    for target, names in imported_modules(source):
        targets = [f"{target}.{name}" for name in names] or [target]
        for full in targets:
            floor = layer_of(full)
            if floor is not None and floor > own:
                bad.append(f"{module} (floor {own}) imports {full} (floor {floor})")
        sb3_algorithm = target in SB3_ALGORITHM_MODULES[1:] or target.split(".")[0] == "sb3_contrib"
        sb3_algorithm |= target == "stable_baselines3" and bool(names)
        if own == GROUND and sb3_algorithm:
            bad.append(f"{module} is on the ground floor but imports the SB3 algorithm module {target}")
    return bad


PACKAGE_MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_floor_is_a_folder() -> None:
    """The layers are folders: every key of LAYERS is a package, not a module with its own exception."""
    for name in LAYERS:
        assert (ROOT / name.replace(".", "/") / "__init__.py").exists(), name


def test_init_files_only_re_export() -> None:
    """An ``__init__.py`` holds a docstring, imports and ``__all__``: no logic."""
    for path in PACKAGE.rglob("__init__.py"):
        for node in ast.parse(path.read_text()).body:
            allowed = isinstance(node, ast.Import | ast.ImportFrom)
            allowed |= isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            allowed |= isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"]
            assert allowed, f"{path.relative_to(ROOT)}:{node.lineno} is logic, not a re-export"


def test_no_package_file_is_over_450_lines() -> None:
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in PACKAGE_MODULES}
    long_files = {name: n for name, n in lengths.items() if n > 450}
    assert long_files == {}


@pytest.mark.parametrize("path", PACKAGE_MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_imports_upward(path: Path) -> None:
    assert upward_imports(module_name(path), path.read_text()) == []


def test_every_floor_is_used() -> None:
    floors = {layer_of(module_name(path)) for path in PACKAGE_MODULES}
    assert floors == {GROUND, SB3_LAYER, BUILDERS, TOP}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("sb3_reinflow.common.flow.chain", "from sb3_reinflow.common.reinflow.policies import ReinFlowPolicy", "floor 1"),
        ("sb3_reinflow.common.flow.chain", "def f():\n    from sb3_reinflow import ReinFlowPPO", "floor 3"),
        ("sb3_reinflow.common.flow.chain", "from sb3_reinflow.pretraining import behavior_cloning", "floor 2"),
        ("sb3_reinflow.common.reinflow.policies", "import sb3_reinflow.zoo", "floor 3"),
        ("sb3_reinflow.common.flow.losses", "from stable_baselines3 import PPO", "SB3 algorithm"),
        ("sb3_reinflow.common.flow.losses", "from stable_baselines3.common.base_class import BaseAlgorithm", "SB3 algorithm"),
    ],
)
def test_the_checker_catches_upward_imports(module: str, source: str, expected: str) -> None:
    """The rule can fail: each of these imports is reported."""
    bad = upward_imports(module, source)
    assert len(bad) == 1 and expected in bad[0], bad


def test_the_checker_allows_downward_imports() -> None:
    source = "from sb3_reinflow.common.flow.chain import FlowChain\n"
    source += "from stable_baselines3.common.distributions import Distribution"
    assert upward_imports("sb3_reinflow.common.reinflow.distributions", source) == []
    assert upward_imports("sb3_reinflow.zoo", "from sb3_reinflow.pretraining import pretrain") == []


def test_chain_options_and_normaliser_live_in_one_place() -> None:
    """The policy creates one ChainConfig and hands it to the chain: no attribute copies of its options remain;
    the policy's observation normaliser is the datasets' one."""
    import numpy as np
    import torch as th

    from sb3_reinflow import ReinFlowPPO
    from sb3_reinflow.common.flow.chain_config import ChainConfig
    from sb3_reinflow.common.data.normalization import normalize

    tiny = dict(velocity_net_arch=[8], noise_net_arch=[8], net_arch=[8], n_flow_steps=3, log_prob_bounds=[-2.0, 1.0])
    policy = ReinFlowPPO("MlpPolicy", "Pendulum-v1", policy_kwargs=tiny, device="cpu").policy
    assert policy.actor.config is policy.chain_config
    assert policy.chain_config == ChainConfig(3, log_prob_bounds=(-2.0, 1.0))
    for name in ChainConfig._fields:
        assert name not in vars(policy) and name not in vars(policy.actor), name
    low, high = np.array([-2.0, 0.0, 1.0]), np.array([2.0, 5.0, 1.5])
    policy.set_normalization(low, high)
    obs = np.array([[0.5, 4.0, 1.0]], dtype=np.float32)
    expected = normalize(obs.astype(np.float64), low, high)
    with th.no_grad():
        normalized = policy.actor_features(th.as_tensor(obs)).numpy()
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-6)


def test_reinflow_ppo_overrides_at_most_eight_sb3_methods() -> None:
    """ReinFlowPPO stays a thin PPO subclass (sb3-contrib's RecurrentPPO and MaskablePPO override 6). ``load`` is
    SB3's own code object with a security note in its docstring, so it changes no behaviour and is not counted."""
    from stable_baselines3 import PPO

    from sb3_reinflow import ReinFlowPPO

    def code_of(value: object) -> object:
        function = getattr(value, "__func__", value)
        return getattr(function, "__code__", None)

    overridden = [
        name
        for name, value in vars(ReinFlowPPO).items()
        if callable(getattr(value, "__func__", value))
        and hasattr(PPO, name)
        and code_of(value) is not code_of(getattr(PPO, name))
    ]
    assert len(overridden) <= 8, f"ReinFlowPPO overrides {len(overridden)} SB3 methods: {sorted(overridden)}"
