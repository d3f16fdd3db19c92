"""Fixtures for tests that install the built package the way a user does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.wheel import build_wheel


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once per test session."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))
