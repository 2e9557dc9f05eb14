"""Skips that are allowed on a developer machine but are failures on CI (CI=true)."""

from __future__ import annotations

import os

import pytest


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip the test when `condition` is false, unless on CI, where a required test that cannot
    run is a failure: a green CI must mean every required test ran."""
    if condition:
        return
    if on_ci():
        pytest.fail("required on CI but cannot run: " + reason, pytrace=False)
    pytest.skip(reason)
