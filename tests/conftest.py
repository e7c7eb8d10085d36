"""Shared fixtures (helpers live in tests/helpers.py so test modules can import them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_dataset


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """3 classes x (6 train + 3 val) 32 px images plus six bad/odd files in train."""
    return make_dataset(tmp_path / "tiny")


@pytest.fixture
def clean_dataset(tmp_path: Path) -> Path:
    """Same as tiny_dataset without the bad files."""
    return make_dataset(tmp_path / "clean", bad_files=False)


@pytest.fixture(autouse=True, scope="session")
def _private_probe_cache(tmp_path_factory):
    """Timing-probe answers (engine/precision.py) go to a scratch file, not the user's ~/.cache."""
    from imagenette_lab.engine import precision

    precision.PROBE_CACHE = tmp_path_factory.mktemp("probe-cache") / "precision.json"
    yield
    precision.PROBE_CACHE = None
