"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


# The MBPP data lives next to the repository (<repo>/../shared/data/mbpp), never inside it.
MBPP_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mbpp"


@pytest.fixture(scope="session")
def mbpp_dir() -> Path:
    """Folder holding mbpp.jsonl and sanitized-mbpp.json (see RESOURCES.md, data section)."""
    if not (MBPP_DIR / "mbpp.jsonl").is_file():
        pytest.skip(f"MBPP data not found at {MBPP_DIR}; it is expected at <repo>/../shared/data/mbpp")
    return MBPP_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random chat model in Hugging Face format (see tests/tiny_model.py)."""
    from tiny_model import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-model"))
