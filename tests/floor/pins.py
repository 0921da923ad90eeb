"""The declared floor: each dependency of pyproject.toml (extras included) pinned to the lowest version it allows.

``make floor-lock`` resolves ``requirements.txt`` under these pins (``python tests/floor/pins.py`` prints them as
a constraints file): every dependency at its floor, the rest at what resolves with them. A floor that does not
resolve with the others fails there, and is to be raised in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared() -> list[Requirement]:
    """Every requirement of the package: its dependencies and each extra's."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = [line for lines in project.get("optional-dependencies", {}).values() for line in lines]
    return [Requirement(line) for line in [*project["dependencies"], *extras]]


def floor_of(requirement: Requirement) -> Version:
    """The lowest version ``requirement`` allows; a requirement without one has no floor to prove."""
    lows = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
    if not lows:
        raise ValueError(f"{requirement} declares no lower bound: give it one in pyproject.toml")
    return max(lows)


if __name__ == "__main__":
    for requirement in declared():
        print(f"{requirement.name}=={floor_of(requirement)}")
