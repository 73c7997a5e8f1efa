"""Shared fixtures: where the real recordings live, and skipping cleanly where they do not."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / 'shared' / 'data' / 'real'


@pytest.fixture(scope='session')
def real_data() -> Path:
    """``../shared/data/real`` beside the checkout; tests that need it skip where it is absent."""
    if not (REAL_DATA / 'README.md').is_file():
        pytest.skip(f'real sample data not found at {REAL_DATA} (it sits beside the checkout in CI)')
    return REAL_DATA



@pytest.fixture(scope='session')
def sim_dataset(tmp_path_factory) -> Path:
    """Two annotated 1 s scenes (urban, highway) in dataset form: scene_00000, scene_00001, index.json."""
    from simdata import small_dataset

    return small_dataset(tmp_path_factory.mktemp('sim_dataset'))
