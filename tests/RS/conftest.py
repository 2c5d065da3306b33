"""Shared fixtures of the RS tests: a tiny random model folder and its tokenizer; env restored after groups."""

import json
import os

import pytest

DIST_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("rs_models") / "tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(autouse=True)
def restore_dist_env():
    """In-process worker groups write RANK, MASTER_PORT, ... into os.environ; undo that after each test."""
    saved = {key: os.environ.get(key) for key in DIST_ENV_KEYS}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def write_json(path, rows) -> str:
    path.write_text(json.dumps(rows))
    return str(path)
