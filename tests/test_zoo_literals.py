"""Reading rl_zoo3 policy_kwargs strings without running them (sb3_reinflow.zoo.literals)."""

import pytest

from sb3_reinflow.zoo.literals import parse_kwargs_string


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "dict(n_flow_steps=4, min_noise_std=0.1, max_noise_std=0.24)",
            {"n_flow_steps": 4, "min_noise_std": 0.1, "max_noise_std": 0.24},
        ),
        ("{'net_arch': [64, 64], 'obs_clip': None}", {"net_arch": [64, 64], "obs_clip": None}),
        ("dict(net_arch=dict(pi=[8], vf=(4, -2.5)), squash=True)", {"net_arch": {"pi": [8], "vf": (4, -2.5)}, "squash": True}),
    ],
)
def test_registry_strings_are_read_as_their_values(text, expected):
    assert parse_kwargs_string(text) == expected


@pytest.mark.parametrize(
    "text, named",
    [
        ("dict(activation_fn=nn.ReLU)", "nn.ReLU"),
        ("dict(a=__import__('os').getcwd())", "__import__"),
        ("dict(**other)", "unpacking"),
        ("[1, 2]", "not a dict"),
        ("{**other}", "unpacking"),
        ("{1: 2}", "not names"),
        ("dict(n_flow_steps=4", "never closed"),
    ],
)
def test_code_is_refused_with_the_text_and_the_fix(text, named):
    with pytest.raises(ValueError, match="dict\\(key=value") as error:
        parse_kwargs_string(text)
    assert named in str(error.value) and repr(text) in str(error.value)
