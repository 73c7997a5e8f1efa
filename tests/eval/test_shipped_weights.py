"""The weights shipped in the package detect objects in a scene they were not trained on.

The scene is rendered here with the default rig (seed 424242: training scenes use seeds 1000 +
i, the held-out evaluation scenes 900000 + i). The floors sit well below what ``mmfusion eval``
measures on the held-out scenes (docs/figures/eval_heldout.json), so they catch broken weights or
a broken inference path, not noise.
"""

from __future__ import annotations

import pytest

from mmfusion_ros.config import load_config
from mmfusion_ros.eval.run import evaluate_model
from mmfusion_ros.model.weights import DEFAULT_WEIGHTS, load_configured_model


@pytest.fixture(scope='module')
def unseen_scene(tmp_path_factory):
    from mmfusion_ros.sim.faults import load_faults
    from mmfusion_ros.sim.scenario import load_scenario
    from mmfusion_ros.sim.simulator import Simulation, record_bag

    scenario = load_scenario('urban')
    simulation = Simulation(scenario, load_config(), load_faults('none', scenario.rig, 1.5), 424242)
    out = tmp_path_factory.mktemp('unseen') / 'urban'
    record_bag(simulation, out, duration_s=1.5, show_progress=False)
    return out


def test_the_weights_ship_in_the_package():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 8_000_000


def test_shipped_weights_detect_in_an_unseen_scene(unseen_scene):
    config = load_config()
    net = load_configured_model(config)
    result = evaluate_model([unseen_scene], config, net, every=3,
                            subsets=('fused', 'lidar_only', 'without_lidar'), progress=False)
    by = result['by_modality']
    assert result['frames'] == 10 and result['ground_truth_boxes'] > 50
    assert by['fused']['mAP'] > FUSED_MAP_FLOOR, by
    assert by['lidar_only']['mAP'] > LIDAR_MAP_FLOOR, by
    assert by['without_lidar']['mAP'] > CAMERA_RADAR_MAP_FLOOR, by
    assert result['per_class']['car']['AP_mean'] > by['fused']['mAP'] * 0.8  # the common class is found


FUSED_MAP_FLOOR = 0.3
LIDAR_MAP_FLOOR = 0.2
CAMERA_RADAR_MAP_FLOOR = 0.1
