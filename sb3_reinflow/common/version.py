"""The package version, read from ``version.txt`` (its single source, also read by setup.cfg)."""

from pathlib import Path

__version__ = (Path(__file__).parent.parent / "version.txt").read_text().strip()
