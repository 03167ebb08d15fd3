"""Shared fixtures for the data tests: the offline tiny tokenizer and the fixture folder."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from prefdistill.models.tiny_tokenizer import TINY_TOKENIZER_DIR

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def _tiny():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


@pytest.fixture
def tok(_tiny):
    """A fresh copy per test, so tests may change its template or special tokens."""
    return copy.deepcopy(_tiny)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
