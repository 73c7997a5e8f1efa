"""Report pictures on synthetic frames: where things land, in which colour, and the report's files."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from mmfusion_ros.config import GridConfig
from mmfusion_ros.errors import MmfusionError, ReportError
from mmfusion_ros.frame import CameraView, Frame
from mmfusion_ros.types import CameraIntrinsics, Detections3D, RigidTransform
from mmfusion_ros.viz import (
    BevVideo,
    bev_map_size,
    camera_mosaic,
    pixel_to_world,
    render_bev,
    render_camera,
    world_to_pixel,
    write_index_html,
)
from mmfusion_ros.viz import palette

GRID = GridConfig()  # x, y in [-51.2, 51.2)
PPM = 6.0
STAMP = 1_700_000_000_250_000_000
# Optical frame (x right, y down, z forward) to base (x forward, y left, z up).
OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def boxes(*rows: tuple, labels: tuple[str, ...] | None = None) -> Detections3D:
    """Detections from rows (x, y, z, l, w, h, yaw, vx, vy)."""
    table = np.array(rows, np.float64).reshape(-1, 9)
    n = len(table)
    return Detections3D(STAMP, 'base_link', table[:, 0:3], table[:, 3:6], table[:, 6], table[:, 7:9],
                        labels or ('car',) * n, np.linspace(0.9, 0.5, n))


def car(x: float, y: float, yaw: float = 0.0, vx: float = 0.0, vy: float = 0.0) -> tuple:
    return (x, y, 0.8, 4.5, 1.9, 1.6, yaw, vx, vy)


def map_area(picture: np.ndarray, grid: GridConfig = GRID, ppm: float = PPM) -> np.ndarray:
    width, height = bev_map_size(grid, ppm)
    return picture[:height, :width]


def pixels_of(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(K, 2) (u, v) of the pixels exactly of ``colour``."""
    rows, cols = np.nonzero(np.all(image == np.array(colour, np.uint8), axis=2))
    return np.stack([cols, rows], axis=1)


def expected_pixel(x: float, y: float) -> np.ndarray:
    return np.array([(51.2 - y) * PPM, (51.2 - x) * PPM])


# ---------------------------------------------------------------------------------------------------
# world_to_pixel


def test_world_to_pixel_round_trips_the_grid_corners() -> None:
    grid = GridConfig(x_range=(-20.0, 60.0), y_range=(-30.0, 30.0), cell_size=0.5)
    ppm = 5.0
    width, height = bev_map_size(grid, ppm)
    assert (width, height) == (300, 400)
    corners = np.array([[60.0, 30.0], [60.0, -30.0], [-20.0, 30.0], [-20.0, -30.0]])
    uv = world_to_pixel(corners, grid, ppm)
    np.testing.assert_allclose(uv, [[0, 0], [width, 0], [0, height], [width, height]])
    np.testing.assert_allclose(pixel_to_world(uv, grid, ppm), corners)
    # x forward is up, y left is left: the ego origin, and a point 10 m ahead and 10 m left of it.
    np.testing.assert_allclose(world_to_pixel(np.array([0.0, 0.0]), grid, ppm), [150, 300])
    np.testing.assert_allclose(world_to_pixel(np.array([10.0, 10.0]), grid, ppm), [100, 250])


def test_world_to_pixel_rejects_a_wrong_shape() -> None:
    with pytest.raises(ReportError, match=r'world_to_pixel: expected .* got shape \(4, 3\)'):
        world_to_pixel(np.zeros((4, 3)), GRID, PPM)
    with pytest.raises(ReportError, match='pixels_per_metre: expected a positive number, got 0'):
        render_bev(None, boxes(), grid=GRID, pixels_per_metre=0)


# ---------------------------------------------------------------------------------------------------
# render_bev


def test_a_lone_detection_is_drawn_at_its_pixel_and_nowhere_else() -> None:
    picture = render_bev(None, boxes(car(20.0, 5.0)), grid=GRID, pixels_per_metre=PPM)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    green = pixels_of(map_area(picture), palette.AGREES)
    assert len(green) > 40
    centre = expected_pixel(20.0, 5.0)  # (277.2, 187.2)
    half_diagonal_px = np.hypot(2.25, 0.95) * PPM
    assert np.max(np.hypot(*(green - centre).T)) <= half_diagonal_px + 3
    # Length (4.5 m) runs along x, which is up the picture: the outline is tall and narrow.
    extent = green.max(axis=0) - green.min(axis=0)
    assert abs(extent[1] - 4.5 * PPM) <= 3 and abs(extent[0] - 1.9 * PPM) <= 3
    # Nothing but the map's own layers elsewhere: no flag or truth colour anywhere in the map.
    for colour in (palette.FLAGGED_ONE, palette.FLAGGED_SEVERAL, palette.TRUTH):
        assert len(pixels_of(map_area(picture), colour)) == 0


def test_velocity_arrow_points_where_the_detection_moves() -> None:
    still = pixels_of(map_area(render_bev(None, boxes(car(20.0, 5.0)), grid=GRID)), palette.AGREES)
    moving = pixels_of(map_area(render_bev(None, boxes(car(20.0, 5.0, vy=5.0)), grid=GRID)), palette.AGREES)
    # 5 m/s to the left over VELOCITY_ARROW_S = 1 s: the arrow reaches 30 px left of the centre.
    centre = expected_pixel(20.0, 5.0)
    assert still[:, 0].min() > centre[0] - 8
    assert centre[0] - 32 <= moving[:, 0].min() <= centre[0] - 27


@pytest.mark.parametrize('reasons, colour', [(['radar: no return'], palette.FLAGGED_ONE),
                                             (['lidar: no points', 'camera: not seen'], palette.FLAGGED_SEVERAL)])
def test_a_flagged_detection_uses_the_flag_colour_and_is_labelled(reasons: list[str], colour) -> None:
    picture = map_area(render_bev(None, boxes(car(20.0, 5.0)), grid=GRID, flags=[reasons]))
    assert len(pixels_of(picture, palette.AGREES)) == 0
    flagged = pixels_of(picture, colour)
    centre = expected_pixel(20.0, 5.0)
    near = np.hypot(*(flagged - centre).T) <= np.hypot(2.25, 0.95) * PPM + 3
    assert np.count_nonzero(near) > 40
    # The reason is written to the right of the box, in (antialiased) flag colour.
    right = int(centre[0] + 1.0 * PPM) + 4
    label = picture[int(centre[1]) - 8:int(centre[1]) + 8, right:right + 80].astype(np.int32)
    assert np.count_nonzero(np.abs(label - np.array(colour)).sum(axis=2) < 60) > 20


def test_flags_must_match_the_detections() -> None:
    with pytest.raises(ReportError, match=r'flags: expected one sequence of reasons per detection \(2\), got 1'):
        render_bev(None, boxes(car(10, 0), car(20, 0)), grid=GRID, flags=[[]])
    with pytest.raises(ReportError, match=r"flags\[0\]: expected a sequence of reason strings"):
        render_bev(None, boxes(car(10, 0)), grid=GRID, flags=['radar'])


def test_ground_truth_is_drawn_white_where_it_is() -> None:
    truth = boxes(car(-10.0, -8.0))
    for picture in (render_bev(None, boxes(), grid=GRID, truth=truth),
                    render_bev(Frame(STAMP, 'base_link', ground_truth=truth), boxes(), grid=GRID)):
        white = pixels_of(map_area(picture), palette.TRUTH)
        assert len(white) > 30
        assert np.max(np.hypot(*(white - expected_pixel(-10.0, -8.0)).T)) <= np.hypot(2.25, 0.95) * PPM + 2


def test_boxes_in_another_frame_are_refused() -> None:
    frame = Frame(STAMP, 'base_link')
    other = Detections3D(STAMP, 'map', np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 2)), (),
                         np.zeros(0))
    with pytest.raises(ReportError, match="detections are in 'map' but the frame is in 'base_link'"):
        render_bev(frame, other, grid=GRID)


def test_lidar_points_are_grey_where_they_are_and_lighter_when_higher() -> None:
    empty = map_area(render_bev(Frame(STAMP, 'base_link'), boxes(), grid=GRID))
    lidar = np.zeros((2, 5), np.float32)
    lidar[:, :3] = [[30.05, -20.05, -4.0], [-40.05, 35.05, 2.5]]
    picture = map_area(render_bev(Frame(STAMP, 'base_link', lidar=lidar), boxes(), grid=GRID))
    low_u, low_v = np.floor(expected_pixel(30.05, -20.05)).astype(int)
    high_u, high_v = np.floor(expected_pixel(-40.05, 35.05)).astype(int)
    low, high = picture[low_v, low_u], picture[high_v, high_u]
    assert len(set(low)) == 1 and len(set(high)) == 1, 'lidar points are grey'
    assert int(high[0]) > int(low[0]) > int(palette.BACKGROUND[0])
    assert np.any(picture[low_v, low_u] != empty[low_v, low_u])
    # Only those two pixels changed.
    assert np.count_nonzero(np.any(picture != empty, axis=2)) == 2


def test_radar_points_are_crosses_coloured_by_motion() -> None:
    radar = np.zeros((2, 7), np.float32)
    radar[0, :5] = [25.0, 25.0, 0.5, 0.0, 0.0]  # static
    radar[1, :5] = [-25.0, -25.0, 0.5, 8.0, 0.0]  # moving forward
    picture = map_area(render_bev(Frame(STAMP, 'base_link', radar=radar), boxes(), grid=GRID))
    static = pixels_of(picture, palette.RADAR_STATIC)
    moving = pixels_of(picture, palette.RADAR_MOVING)
    assert len(static) >= 9 and np.max(np.hypot(*(static - expected_pixel(25, 25)).T)) <= 5
    assert len(moving) >= 9 and np.max(np.abs(moving - expected_pixel(-25, -25)), axis=0)[0] <= 5
    # The moving point's tick runs 0.5 s * 8 m/s = 4 m forward (up).
    assert moving[:, 1].min() <= expected_pixel(-25, -25)[1] - 4 * PPM + 3


# ---------------------------------------------------------------------------------------------------
# render_camera, camera_mosaic


def pinhole_view(name: str = 'cam_test', width: int = 320, height: int = 240, focal: float = 200.0,
                 rgb: tuple[int, int, int] = (10, 100, 200)) -> CameraView:
    """A camera at the base origin looking along +x, no distortion, a uniform image."""
    k = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    intrinsics = CameraIntrinsics(name, width, height, k, 'none', np.zeros(0))
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = rgb
    return CameraView(name, STAMP, pixels, intrinsics, RigidTransform(OPTICAL_TO_BODY, np.zeros(3)))


def test_render_camera_draws_the_box_inside_its_projection() -> None:
    view = pinhole_view()
    original = cv2.cvtColor(view.pixels, cv2.COLOR_RGB2BGR)
    box = boxes((15.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0))
    image = render_camera(view, box)
    assert image.shape == original.shape and image.dtype == np.uint8
    # The near face (13 m) bounds the projection: u in 160 +- 200 * 1 / 13, v in 120 +- 200 * 0.75 / 13.
    left, right = 160 - 200 / 13, 160 + 200 / 13
    top, bottom = 120 - 200 * 0.75 / 13, 120 + 200 * 0.75 / 13
    rows, cols = np.nonzero(np.any(image != original, axis=2))
    inside = (cols >= left - 3) & (cols <= right + 3) & (rows >= top - 3) & (rows <= bottom + 3)
    assert np.count_nonzero(inside) > 100
    # Anything changed outside the box is its label, just above it.
    outside_rows = rows[~inside]
    assert len(outside_rows) > 0 and np.all((outside_rows < top) & (outside_rows > top - 25))
    # The near face's left edge is drawn in the detection colour, half way down.
    edge = image[120, int(left) - 2:int(left) + 3].astype(np.int32)
    assert np.min(np.abs(edge - np.array(palette.AGREES)).sum(axis=1)) < 40
    # Unchanged pixels keep the image, converted to BGR.
    assert tuple(image[5, 5]) == (200, 100, 10)


def test_render_camera_uses_the_flag_colour() -> None:
    image = render_camera(pinhole_view(), boxes(car(15.0, 0.0)), flags=[['radar: no return']])
    assert len(pixels_of(image[100:140], palette.FLAGGED_ONE)) > 0
    assert len(pixels_of(image, palette.AGREES)) == 0


@pytest.mark.parametrize('where', [(-15.0, 0.0), (15.0, 40.0), (0.0, 0.0)],
                         ids=['behind', 'outside-the-image', 'around-the-camera-behind-near-plane'])
def test_render_camera_draws_nothing_for_a_box_it_cannot_see(where: tuple[float, float]) -> None:
    view = pinhole_view()
    row = (where[0], where[1], 0.0, 0.4, 0.4, 0.4, 0.0, 0.0, 0.0) if where == (0.0, 0.0) else car(*where)
    image = render_camera(view, boxes(row))
    np.testing.assert_array_equal(image, cv2.cvtColor(view.pixels, cv2.COLOR_RGB2BGR))


def test_render_camera_cuts_a_box_that_reaches_behind_the_camera() -> None:
    view = pinhole_view()
    image = render_camera(view, boxes((2.0, -2.0, 0.0, 10.0, 1.5, 1.5, 0.0, 0.0, 0.0)))  # from -3 m to 7 m ahead
    changed = np.any(image != cv2.cvtColor(view.pixels, cv2.COLOR_RGB2BGR), axis=2)
    assert np.count_nonzero(changed[:, 160:]) > 50  # on the right half: the box is to the right (y < 0)


def test_camera_mosaic_tiles_views_at_a_common_height() -> None:
    views = [pinhole_view('cam_a', 320, 240), pinhole_view('cam_b', 160, 120, focal=100.0),
             pinhole_view('cam_c', 320, 240), pinhole_view('cam_d', 640, 480, focal=400.0)]
    detections = boxes(car(15.0, 0.0))
    mosaic = camera_mosaic(views, detections, None, columns=3)
    assert mosaic.shape == (2 * 120, 3 * 160, 3)  # height of the smallest view, 4:3 tiles
    assert camera_mosaic(views, detections, [[]], columns=2, height=60).shape == (2 * 60, 2 * 80, 3)
    # Each tile is named in its top-left corner: light text on the tile's colour.
    for tile_u in (0, 160, 320):
        corner = mosaic[2:20, tile_u + 4:tile_u + 60].astype(np.int32)
        assert np.any(corner.sum(axis=2) > 600)
    # The second row has one tile; the rest is black padding.
    assert np.all(mosaic[120:, 160:] == 0)
    assert camera_mosaic([], detections, None).shape[2] == 3
    with pytest.raises(ReportError, match='columns must be at least 1, got 0'):
        camera_mosaic(views, detections, None, columns=0)


# ---------------------------------------------------------------------------------------------------
# BevVideo


def read_video(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_bev_video_writes_frames_that_read_back(tmp_path) -> None:
    path = tmp_path / 'bev.mp4'
    with BevVideo(path, fps=5) as video:
        for level in (0, 80, 160, 240):
            video.write(np.full((48, 64, 3), level, np.uint8))
        video.write(np.full((96, 128, 3), 120, np.uint8))  # another size: resized
    assert video.frames == 5 and video.size == (64, 48)
    frames = read_video(path)
    assert len(frames) == 5
    assert all(frame.shape == (48, 64, 3) for frame in frames)
    np.testing.assert_allclose([frame.mean() for frame in frames], [0, 80, 160, 240, 120], atol=12)
    with pytest.raises(ReportError, match='write after close'):
        video.write(np.zeros((48, 64, 3), np.uint8))


def test_bev_video_pads_an_odd_size_to_even(tmp_path) -> None:
    with BevVideo(tmp_path / 'odd.mp4', fps=2) as video:
        video.write(np.full((47, 65, 3), 200, np.uint8))
    frames = read_video(tmp_path / 'odd.mp4')
    assert video.size == (66, 48) and [f.shape for f in frames] == [(48, 66, 3)]


def test_bev_video_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ReportError, match='does not exist'):
        BevVideo(tmp_path / 'missing' / 'bev.mp4', fps=5)
    with pytest.raises(ReportError, match='fps must be a positive number'):
        BevVideo(tmp_path / 'bev.mp4', fps=0)
    (tmp_path / 'taken.mp4').mkdir()  # a folder where the file should go: the writer cannot open
    with pytest.raises(ReportError, match='cannot open .*taken.mp4') as caught:
        with BevVideo(tmp_path / 'taken.mp4', 5) as video:
            video.write(np.zeros((48, 64, 3), np.uint8))
    assert isinstance(caught.value, MmfusionError)
    with pytest.raises(ReportError, match=r'must be \(H, W, 3\) uint8 BGR'):
        with BevVideo(tmp_path / 'f.mp4', 5) as video:
            video.write(np.zeros((48, 64), np.float32))


# ---------------------------------------------------------------------------------------------------
# index.html


SUMMARY = {
    'bag': 'drive <1> & more.db3',
    'frames': 200,
    'detections': 1234,
    'flagged': 17,
    'latency_ms': {'p50': 41.5, 'p99': 88.25},
    'dropped': 3,
    'stages_ms': {
        'decode': {'mean': 1.0, 'p50': 0.9, 'p99': 2.5, 'max': 3.0},
        'network<gpu>': {'p50': 30.0, 'count': 200},
    },
}
PICTURES = [{'path': 'bev/0001.png', 'caption': 'BEV <frame 1>'},
            {'path': 'cameras/0001.png', 'caption': 'cameras & boxes'}]


def test_index_html_shows_summary_timing_pictures_and_video(tmp_path) -> None:
    path = write_index_html(tmp_path / 'report', SUMMARY, PICTURES, 'bev.mp4')
    assert path == tmp_path / 'report' / 'index.html'
    page = path.read_text(encoding='utf-8')
    for figure in ('>200<', '>1,234<', '>17<', '>41.5<', '>88.25<', '>3<'):
        assert figure in page
    assert 'drive &lt;1&gt; &amp; more.db3' in page and '<1>' not in page
    rows = re.findall(r'<tr><th>([^<]*)</th>((?:<td[^>]*>[^<]*</td>)*)</tr>', page)
    stages = {stage: re.findall(r'>([^<]*)</td>', cells) for stage, cells in rows}
    assert '<th>stage</th><th>mean</th><th>p50</th><th>p99</th><th>max</th><th>count</th>' in page
    assert stages['decode'] == ['1.00', '0.90', '2.50', '3.00', '']
    assert stages['network&lt;gpu&gt;'] == ['', '30.00', '', '', '200']
    assert re.findall(r'<img src="([^"]+)"', page) == ['bev/0001.png', 'cameras/0001.png']
    assert '<figcaption>BEV &lt;frame 1&gt;</figcaption>' in page and 'cameras &amp; boxes' in page
    assert '<video src="bev.mp4"' in page
    assert 'http' not in page.lower()
    assert '<script' not in page and '<link' not in page


def test_index_html_without_video_or_timing(tmp_path) -> None:
    page = write_index_html(tmp_path, {'frames': 0}, [], None).read_text()
    assert '<video' not in page and '<table' not in page and '>0<' in page


@pytest.mark.parametrize('bad', ['/tmp/bev.png', 'https://example.org/bev.png', ''])
def test_index_html_refuses_links_outside_the_report(tmp_path, bad: str) -> None:
    with pytest.raises(ReportError, match=r'pictures\[0\].path: .* must be a path relative to the report folder'):
        write_index_html(tmp_path, SUMMARY, [{'path': bad, 'caption': 'x'}], None)
    with pytest.raises(ReportError, match=r'pictures\[0\]: has no "path"'):
        write_index_html(tmp_path, SUMMARY, [{'caption': 'x'}], None)
