"""The environment under test is the declared floor: every dependency of pyproject.toml (its extras too) is
installed at exactly the lowest version it allows, so the smoke tests beside this one prove that floor."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.floor.pins import declared, floor_of


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_each_dependency_is_installed_at_its_declared_floor(requirement: Requirement) -> None:
    try:
        installed = Version(version(requirement.name))
    except PackageNotFoundError:
        pytest.fail(f"{requirement.name} is not installed: `make test-floor` installs tests/floor/requirements.txt")
    assert installed == floor_of(requirement), (
        f"{requirement.name} {installed} is installed, pyproject.toml declares {requirement}: "
        "`make floor-lock` resolves the floor again"
    )
