"""Fixtures for the message tests: raw messages from the real bags, and a way to corrupt a message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmfusion_ros.msgs.typestore import deserialize, serialize, typestore

# ``../shared/data/real`` beside the checkout, where CI keeps it too.
REAL = Path(__file__).parents[2] / '..' / 'shared' / 'data' / 'real'
BAGS = ('nuscenes_demo_keyframe_mcap', 'nuscenes_demo_keyframe_sqlite3', 'pjlab_radar_lidar_mcap',
        'pjlab_radar_lidar_sqlite3')


@pytest.fixture(scope='session')
def real_root() -> Path:
    """The real-data folder; tests that need it skip where it is absent."""
    if not (REAL / 'README.md').is_file():
        pytest.skip(f'real sample data not found at {REAL.resolve()} (it sits beside the checkout in CI)')
    return REAL.resolve()


@pytest.fixture(scope='session')
def bag_messages() -> dict[str, list[tuple[str, str, bytes]]]:
    """Every message of the four real bags as ``{bag: [(topic, msgtype, raw CDR bytes), ...]}``."""
    bags = REAL.resolve() / 'bags'
    if not all((bags / name).is_dir() for name in BAGS):
        pytest.skip(f'real rosbag2 samples not found under {bags} (they sit beside the checkout in CI)')
    from rosbags.highlevel import AnyReader

    out = {}
    for name in BAGS:
        with AnyReader([bags / name], default_typestore=typestore()) as reader:
            out[name] = [(conn.topic, conn.msgtype, bytes(raw)) for conn, _, raw in reader.messages()]
    return out


@pytest.fixture
def rewrite() -> Callable[[bytes, str, Callable[[Any], None]], bytes]:
    """``rewrite(raw, msgtype, change)``: deserialize, let ``change`` mutate the message, serialize."""

    def apply(raw: bytes, msgtype: str, change: Callable[[Any], None]) -> bytes:
        msg = deserialize(raw, msgtype)
        change(msg)
        return serialize(msg, msgtype)

    return apply
