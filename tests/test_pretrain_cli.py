"""The options tables of docs/pretraining.md match the parsers of ``sb3_reinflow.tools.collect_demos`` and ``.pretrain``."""

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `(--[a-z0-9-]+)` \| ([^|]+) \|", re.MULTILINE)


def script_parser(name: str) -> argparse.ArgumentParser:
    spec = importlib.util.find_spec(f"sb3_reinflow.tools.{name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_parser()


def doc_table(script: str) -> dict[str, str]:
    """Option -> default cell of the table after the line "`python -m sb3_reinflow.tools.<script>`:" (docs/pretraining.md)."""
    text = (ROOT / "docs" / "pretraining.md").read_text()
    start = text.index(f"`python -m sb3_reinflow.tools.{script}`:\n")
    table = text[start:].split("\n\n")[1]
    return {option: cell.strip() for option, cell in ROW.findall(table)}


def required_options(parser: argparse.ArgumentParser) -> set[str]:
    """Options that must be given, alone or as one of a required mutually exclusive group."""
    required = {action.option_strings[0] for action in parser._actions if action.required}
    for group in parser._mutually_exclusive_groups:
        if group.required:
            required |= {action.option_strings[0] for action in group._group_actions}
    return required


def parse_default(cell: str) -> object:
    """A documented default: "required ...", "none", "on"/"off", a JSON-ish `{}`, a number or a word."""
    cell = cell.strip("`")
    if cell.startswith("required"):
        return "required"
    special = {"none": None, "on": True, "off": False, "{}": {}}
    if cell in special:
        return special[cell]
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return cell


@pytest.mark.parametrize("script", ["collect_demos", "pretrain"])
def test_doc_matches_parser(script: str) -> None:
    parser, documented = script_parser(script), doc_table(script)
    actions = {action.option_strings[0]: action for action in parser._actions if action.option_strings[0] != "-h"}
    assert set(documented) == set(actions), "docs/pretraining.md and --help list different options"
    required = required_options(parser)
    for option, action in actions.items():
        expected = "required" if option in required else action.default
        documented_default = parse_default(documented[option])
        if isinstance(documented_default, float):
            assert isinstance(expected, int | float) and documented_default == pytest.approx(expected), option
        else:
            assert documented_default == expected, option


def test_help_runs() -> None:
    help_text = script_parser("pretrain").format_help()
    assert "--n-gradient-steps" in help_text and "--no-progress-bar" in help_text
