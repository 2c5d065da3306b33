"""Fixtures for the evaluation tests: the tiny tokenizer / random model and a scripted stub generator."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from verl.utils.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    from verl.utils.models import build_tiny_model

    return build_tiny_model(tiny_tokenizer, seed=3)


@pytest.fixture()
def hf_generator(tiny_model, tiny_tokenizer):
    from verl.eval.generator import HFGenerator

    return HFGenerator(tiny_model, tiny_tokenizer, batch_size=3, progress=False)
