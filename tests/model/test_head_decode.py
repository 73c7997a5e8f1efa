"""decode_detections and encode_targets: hand-made maps decode to hand-made boxes; decode(encode(b)) == b."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmfusion_ros.config import GridConfig
from mmfusion_ros.model import HeadConfig, HeadOutputs, ModelError, decode_detections, encode_targets, gaussian_radius
from mmfusion_ros.types import Detections3D

GRID = GridConfig(x_range=(-16.0, 16.0), y_range=(-8.0, 8.0), z_range=(-3.0, 3.0), cell_size=0.5)  # 32 x 64
HEAD = HeadConfig(score_threshold=0.3, output_stride=1)


def empty_maps(grid: GridConfig, head: HeadConfig) -> HeadOutputs:
    H, W = grid.shape[0] // head.output_stride, grid.shape[1] // head.output_stride
    K = head.num_classes
    zeros = lambda n: torch.zeros(1, n, H, W)  # noqa: E731
    yaw = zeros(2)
    yaw[:, 1] = 1.0  # cos 1: heading 0
    return HeadOutputs(torch.full((1, K, H, W), -10.0), zeros(2), zeros(1), zeros(3), yaw, zeros(2))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_hand_made_heatmap_decodes_to_the_hand_made_boxes():
    maps = empty_maps(GRID, HEAD)
    # (class, row, col, score, dx, dy, z, l, w, h, yaw, vx, vy)
    boxes = [(0, 10, 20, 0.9, 0.25, 0.75, -0.8, 4.5, 1.9, 1.6, 0.3, 5.0, -1.0),
             (3, 20, 5, 0.6, 0.5, 0.5, -0.9, 0.7, 0.6, 1.75, -2.0, 0.5, 0.2),
             (2, 28, 50, 0.45, 0.1, 0.9, 0.1, 12.0, 2.9, 3.4, math.pi / 2, 0.0, 0.0)]
    for k, r, c, score, dx, dy, z, length, width, height, yaw, vx, vy in boxes:
        maps.heatmap[0, k, r, c] = logit(score)
        maps.heatmap[0, k, r, c + 1] = logit(score * 0.8)  # a shoulder beside the peak: not a peak
        maps.offset[0, :, r, c] = torch.tensor([dx, dy])
        maps.z[0, 0, r, c] = z
        maps.log_size[0, :, r, c] = torch.tensor([length, width, height]).log()
        maps.yaw[0, :, r, c] = torch.tensor([math.sin(yaw), math.cos(yaw)])
        maps.velocity[0, :, r, c] = torch.tensor([vx, vy])
    maps.heatmap[0, 4, 2, 2] = logit(0.2)  # a peak below the score threshold

    detections = decode_detections(maps, GRID, HEAD, 123, 'base_link')

    assert len(detections) == 3 and detections.stamp_ns == 123 and detections.frame_id == 'base_link'
    assert detections.labels == ('car', 'pedestrian', 'bus')  # by descending score
    for i, (k, r, c, score, dx, dy, z, length, width, height, yaw, vx, vy) in enumerate(boxes):
        expected_x = -16.0 + (c + dx) * 0.5
        expected_y = -8.0 + (r + dy) * 0.5
        np.testing.assert_allclose(detections.centers[i], [expected_x, expected_y, z], atol=1e-5)
        np.testing.assert_allclose(detections.sizes[i], [length, width, height], rtol=1e-5)
        assert math.isclose(detections.yaws[i], yaw, abs_tol=1e-5)
        np.testing.assert_allclose(detections.velocities[i], [vx, vy], atol=1e-6)
        assert math.isclose(detections.scores[i], score, rel_tol=1e-5)


@pytest.mark.parametrize('nms_kind', ['rotated', 'circle'])
def test_nms_removes_a_duplicate_of_the_same_class_only(nms_kind):
    head = HeadConfig(score_threshold=0.3, output_stride=1, nms_kind=nms_kind, nms_iou_threshold=0.1,
                      nms_radius=2.0)
    maps = empty_maps(GRID, head)
    maps.log_size[0, :, :, :] = torch.tensor([4.0, 2.0, 1.5]).log().view(3, 1, 1)
    maps.heatmap[0, 0, 10, 10] = logit(0.9)
    maps.heatmap[0, 0, 10, 12] = logit(0.8)  # 1 m away, same class: a duplicate
    maps.heatmap[0, 1, 10, 14] = logit(0.7)  # 2 m away, another class: kept
    detections = decode_detections(maps, GRID, head, 0, 'base_link')
    assert detections.labels == ('car', 'truck')
    np.testing.assert_allclose(detections.scores, [0.9, 0.7], rtol=1e-5)


def boxes_of(rows: list[tuple], stamp_ns: int = 5) -> Detections3D:
    return Detections3D(stamp_ns, 'base_link',
                        centers=np.array([r[1:4] for r in rows], float), sizes=np.array([r[4:7] for r in rows], float),
                        yaws=np.array([r[7] for r in rows], float), velocities=np.array([r[8:10] for r in rows], float),
                        labels=tuple(r[0] for r in rows), scores=np.ones(len(rows)))


def dense_maps(targets, grid: GridConfig, head: HeadConfig) -> HeadOutputs:
    """The head maps that ``targets`` ask for: the heatmap as logits, each regression row at its cell."""
    K, H, W = targets.heatmap.shape
    probability = targets.heatmap.clamp(1e-6, 1 - 1e-6)
    maps = empty_maps(grid, head)
    maps = maps._replace(heatmap=(probability / (1 - probability)).log()[None])
    for j in torch.nonzero(targets.mask).flatten():
        r, c = divmod(int(targets.index[j]), W)
        reg = targets.regression[j]
        maps.offset[0, :, r, c] = reg[0:2]
        maps.z[0, 0, r, c] = reg[2]
        maps.log_size[0, :, r, c] = reg[3:6]
        maps.yaw[0, :, r, c] = reg[6:8]
        maps.velocity[0, :, r, c] = reg[8:10]
    return maps


@pytest.mark.parametrize('output_stride', [1, 2])
def test_decode_of_encode_gives_the_boxes_back(output_stride):
    head = HeadConfig(score_threshold=0.5, output_stride=output_stride)
    rows = [('car', 3.3, 2.1, -0.7, 4.6, 1.9, 1.7, 0.4, 8.0, 1.0),
            ('truck', -10.2, -5.6, -0.2, 8.0, 2.6, 3.1, -2.9, -3.0, 0.5),
            ('pedestrian', 12.05, 6.4, -0.9, 0.8, 0.7, 1.8, 1.5, 0.0, 1.2),
            ('cyclist', -2.0, 7.9, -0.8, 1.8, 0.7, 1.6, 3.0, -4.0, -4.0),
            ('bus', 8.0, -4.0, 0.3, 11.0, 2.9, 3.5, -1.2, 0.0, 0.0)]
    boxes = boxes_of(rows)
    outside = boxes_of(rows + [('car', 30.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0)])
    targets = encode_targets(outside, GRID, head)
    assert targets.dropped_outside == 1
    assert int(targets.mask.sum()) == 5 and targets.mask.shape == (head.max_detections,)
    assert targets.heatmap.shape == (5, 32 // output_stride, 64 // output_stride)
    assert float(targets.heatmap.max()) == 1.0

    decoded = decode_detections(dense_maps(targets, GRID, head), GRID, head, 5, 'base_link')

    assert len(decoded) == len(boxes)
    match = [decoded.labels.index(label) for label in boxes.labels]  # one box per class here
    np.testing.assert_allclose(decoded.centers[match], boxes.centers, atol=1e-5)
    np.testing.assert_allclose(decoded.sizes[match], boxes.sizes, rtol=1e-5)
    np.testing.assert_allclose(np.cos(decoded.yaws[match] - boxes.yaws), 1.0, atol=1e-6)
    np.testing.assert_allclose(decoded.velocities[match], boxes.velocities, atol=1e-5)
    np.testing.assert_allclose(decoded.scores, 1.0, atol=1e-5)


def test_cells_around_the_centre_regress_the_centre():
    # A bus along x (11 m = 22 cells of 0.5 m) and a car beside it; the head's dense targets.
    boxes = boxes_of([('bus', 2.1, 0.3, 0.0, 11.0, 2.8, 3.4, 0.0, 4.0, 0.0),
                      ('car', 3.0, 2.9, -0.5, 4.4, 1.9, 1.6, 0.0, 0.0, 0.0)])
    targets = encode_targets(boxes, GRID, HEAD)
    H, W = targets.heatmap.shape[1:]
    row, col = np.divmod(targets.dense_index.numpy(), W)
    slot = targets.dense_slot.numpy()
    u = (boxes.centers[:, 0] + 16.0) / 0.5
    v = (boxes.centers[:, 1] + 8.0) / 0.5
    # every cell's offset points at its box's centre, whichever cell it is
    np.testing.assert_allclose(col + targets.dense_offset[:, 0].numpy(), u[slot], atol=1e-5)
    np.testing.assert_allclose(row + targets.dense_offset[:, 1].numpy(), v[slot], atol=1e-5)
    bus_cols = col[slot == 0]
    assert bus_cols.max() - bus_cols.min() + 1 >= 22  # the bus's whole length, its ends included
    assert len(set(targets.dense_index.tolist())) == len(targets.dense_index)  # a cell regresses one box
    for j in range(2):  # the centre cell is its box's, weighs at least half, and each box weighs 1
        at_centre = targets.dense_index.numpy() == int(targets.index[j])
        assert slot[at_centre].tolist() == [j] and targets.dense_weight[at_centre].item() > 0.5
        assert targets.dense_weight[slot == j].sum().item() == pytest.approx(1.0, abs=1e-5)
    # a cell (centre y 1.75) inside both grown footprints goes to the nearer centre: the car's
    between = int((1.75 + 8.0) / 0.5) * W + int((3.0 + 16.0) / 0.5)
    assert slot[targets.dense_index.numpy() == between].tolist() == [1]

    # A peak on the bus's far end (not its centre cell) decodes to the bus's centre.
    maps = empty_maps(GRID, HEAD)
    for m, (r, c) in enumerate(zip(row, col)):
        reg = targets.regression[slot[m]]
        maps.offset[0, :, r, c] = targets.dense_offset[m]
        maps.log_size[0, :, r, c] = reg[3:6]
        maps.velocity[0, :, r, c] = reg[8:10]
    end = int(np.argmax(np.where(slot == 0, col, -1)))
    maps.heatmap[0, 2, row[end], col[end]] = logit(0.8)
    decoded = decode_detections(maps, GRID, HEAD, 0, 'base_link')
    assert decoded.labels == ('bus',)
    np.testing.assert_allclose(decoded.centers[0, :2], boxes.centers[0, :2], atol=1e-5)


def test_heatmap_radius_follows_centerpoint():
    # CenterPoint's three cases for a 10 x 4 cell box at overlap 0.1: r1 11.03, r2 21.2, r3 2.645.
    assert gaussian_radius(10.0, 4.0, 0.1) == pytest.approx(2.645, abs=1e-3)  # by hand: r3
    assert gaussian_radius(2.0, 2.0, 0.1) < gaussian_radius(4.0, 4.0, 0.1)
    head = HeadConfig(output_stride=1, min_radius=2)
    targets = encode_targets(boxes_of([('pedestrian', 0.1, 0.1, 0.0, 0.6, 0.6, 1.8, 0.0, 0.0, 0.0)]), GRID, head)
    peak = targets.heatmap[3]
    r, c = divmod(int(targets.index[0]), 64)
    assert peak[r, c] == 1.0 and peak[r, c + 2] > 0 and peak[r, c + 3] == 0  # min_radius 2 cells


def test_encode_errors_name_the_problem():
    with pytest.raises(ModelError, match=r"labels \['tram'\] are not among the classes"):
        encode_targets(boxes_of([('tram', 0.0, 0.0, 0.0, 9.0, 2.5, 3.0, 0.0, 0.0, 0.0)]), GRID, HEAD)
    many = boxes_of([('car', float(x), 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0) for x in range(-10, 10)])
    with pytest.raises(ModelError, match='20 boxes inside the grid, more than max_objects=4'):
        encode_targets(many, GRID, HEAD, max_objects=4)
    with pytest.raises(ModelError, match=r'heatmap \(1, 5, 16, 16\) is not \(1, 5, 32, 64\)'):
        decode_detections(HeadOutputs(*(torch.zeros(1, n, 16, 16) for n in (5, 2, 1, 3, 2, 2))),
                          GRID, HEAD, 0, 'base_link')
