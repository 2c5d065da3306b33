"""Fixtures of the single-controller tests (the session Ray instance lives in tests/conftest.py)."""

import os

import pytest

DIST_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def restore_dist_env():
    """In-process worker groups write RANK, MASTER_PORT, ... into os.environ; undo that after the test."""
    saved = {key: os.environ.get(key) for key in DIST_ENV_KEYS}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
