from __future__ import annotations

import time

import pytest

from mmfusion_ros.timing import FRAME, StageTimer


def test_stages_inside_a_frame_are_recorded_by_name_and_nested_by_path():
    timer = StageTimer()
    for _ in range(3):
        with timer.frame():
            with timer.stage('geometry'):
                time.sleep(0.002)
            with timer.stage('encoders'):
                with timer.stage('camera'):
                    pass
    summary = timer.summary()
    assert set(summary) == {FRAME, 'geometry', 'encoders', 'encoders/camera'}
    assert summary['geometry']['count'] == 3
    assert summary['geometry']['p50'] >= 2.0
    assert summary[FRAME]['p50'] >= summary['geometry']['p50']
    assert summary['encoders']['max'] >= summary['encoders/camera']['max']


def test_window_bounds_memory_and_summary_uses_recent_frames():
    timer = StageTimer(window=10)
    for value in range(100):
        timer.record('latency', float(value))
    summary = timer.summary()['latency']
    assert summary['count'] == 10
    assert summary['p50'] == pytest.approx(94.5)
    assert timer.last['latency'] == 99.0


def test_stage_is_recorded_when_the_block_raises():
    timer = StageTimer()
    with pytest.raises(RuntimeError):
        with timer.stage('decode'):
            raise RuntimeError('bad frame')
    assert timer.summary()['decode']['count'] == 1
    with timer.stage('after'):
        pass
    assert 'after' in timer.summary()  # the failed stage did not stay open


def test_synchronize_is_called_around_each_stage():
    calls = []
    timer = StageTimer(synchronize=lambda: calls.append(1))
    with timer.stage('head'):
        pass
    assert len(calls) == 2


@pytest.mark.parametrize('bad', [-1.0, float('nan')])
def test_record_rejects_negative_or_nan(bad):
    with pytest.raises(ValueError, match='duration must be >= 0'):
        StageTimer().record('latency', bad)


def test_window_must_be_positive():
    with pytest.raises(ValueError, match='window must be at least 1'):
        StageTimer(window=0)
