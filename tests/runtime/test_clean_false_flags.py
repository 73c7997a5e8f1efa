"""`mmfusion eval --faults` over drives that carry no fault: their false flags and health false alarms."""

from __future__ import annotations

import json

from mmfusion_ros.cli import main


def test_eval_faults_on_clean_drives_alone_reports_their_false_flags(sim_bag, blackout_bag, tmp_path):
    out = tmp_path / 'clean.json'
    assert main(['eval', '--faults', str(sim_bag), '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['by_fault'] == {}
    clean = result['clean']
    assert clean['recordings'] == 1 and clean['frames'] > 0 and clean['detections'] > 0
    assert 0 <= clean['false_flag_rate'] <= 1 and clean['health_false_alarms']['sensor_frames'] > 0
    # With a faulted drive among them, the fault is benchmarked and the clean drive stays the reference.
    assert main(['eval', '--faults', str(blackout_bag), '--clean', str(sim_bag), '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result['by_fault']) == ['camera_blackout'] and result['clean']['recordings'] == 1
