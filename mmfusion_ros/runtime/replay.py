"""``mmfusion replay``: a recording through ``FusionService``, with an output bag and a report.

As fast as possible (default) every frame runs inline, in log order; the service's clock is the
recording's log time, so latency = (log time when the frame was complete - its trigger stamp) +
the wall time to process it: what a live system of this speed would see. With ``realtime`` the
messages are released at recorded speed against the wall clock and frames run on the service's
worker: a frame still waiting when a newer one completes is skipped, and a frame published later
than one trigger period after it was complete is counted late.

The output bag holds every input message as recorded and every output at the clock time it was
produced. The report directory gets ``summary.json``, a BEV picture and a camera mosaic every
``picture_every`` frames, ``bev.mp4`` of every frame and ``index.html`` tying them together.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2

from ..config import FusionConfig
from ..errors import BagError
from ..io.bag import BagReader, BagWriter
from ..pipeline import FusionPipeline, FusionResult
from .service import FusionService, OutputMessage

__all__ = ['ReplayOptions', 'replay']

NS = 1_000_000_000


@dataclass(frozen=True)
class ReplayOptions:
    weights: str | None = None
    out_bag: Path | None = None
    report: Path | None = None
    realtime: bool = False
    picture_every: int = 20  # a BEV picture and a camera mosaic every this many frames
    video: bool = True
    progress: bool = True
    storage: str = 'mcap'


@dataclass
class _Report:
    directory: Path
    config: FusionConfig
    every: int
    video_fps: float
    pictures: list[dict[str, str]] = field(default_factory=list)
    video: Any = None
    frames: int = 0

    def open(self, video: bool) -> None:
        from ..viz.report import BevVideo

        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / 'frames').mkdir(exist_ok=True)
        if video:
            self.video = BevVideo(self.directory / 'bev.mp4', self.video_fps).__enter__()

    def add(self, result: FusionResult, detections: Any, latency_ms: float) -> None:
        from ..viz.bev import render_bev
        from ..viz.camera import camera_mosaic

        frame = result.frame
        picture_due = self.frames % self.every == 0
        self.frames += 1
        if self.video is None and not picture_due:
            return
        title = (f'{frame.stamp_ns / 1e9:.2f} s  {len(detections)} objects, {result.flagged} flagged, '
                 f'{latency_ms:.0f} ms')
        bev = render_bev(frame, detections, grid=self.config.grid, flags=result.flags, title=title)
        if self.video is not None:
            self.video.write(bev)
        if picture_due:
            name = f'frames/bev_{self.frames - 1:05d}.png'
            cv2.imwrite(str(self.directory / name), bev)
            self.pictures.append({'path': name, 'caption': f'frame {self.frames - 1}: {title}'})
            if frame.cameras:
                mosaic = camera_mosaic(frame.cameras, detections, result.flags)
                name = f'frames/cameras_{self.frames - 1:05d}.png'
                cv2.imwrite(str(self.directory / name), mosaic)
                self.pictures.append({'path': name, 'caption': f'frame {self.frames - 1}: cameras'})

    def close(self, summary: dict[str, Any]) -> None:
        from ..viz.report import write_index_html

        video = None
        if self.video is not None:
            self.video.close()
            video = 'bev.mp4' if self.video.frames else None
        (self.directory / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
        write_index_html(self.directory, summary, self.pictures, video)


def replay(paths: Path | Sequence[Path], config: FusionConfig, options: ReplayOptions = ReplayOptions(),
           pipeline: FusionPipeline | None = None) -> dict[str, Any]:
    """Run the recording(s) through the service; the summary (also written as the report's JSON)."""
    from tqdm import tqdm

    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    pipeline = pipeline or FusionPipeline(config, weights=options.weights)
    reader = BagReader(paths, recover=True).open()
    clock_ns = [reader.start_ns]
    if options.realtime:
        wall_start = time.monotonic_ns()
        clock = lambda: reader.start_ns + (time.monotonic_ns() - wall_start)  # noqa: E731 - the replay clock
    else:
        clock = lambda: clock_ns[0]  # noqa: E731 - log time of the message being handled
    writer: BagWriter | None = None
    lock = threading.Lock()
    written = {'outputs': 0}

    def write_output(message: OutputMessage) -> None:
        if writer is None:
            return
        with lock:
            writer.write(message.topic, max(0, message.stamp_ns), message.raw)
            written['outputs'] += 1

    trigger = config.trigger_sensor
    period_ms = 1e3 / config.sensors[trigger].rate_hz if trigger else 100.0
    service = FusionService(config, pipeline, clock=clock, threaded=options.realtime,
                            publish=write_output if options.realtime else None)
    report = None
    if options.report is not None:
        report = _Report(Path(options.report), config, max(1, options.picture_every), 1e3 / period_ms)
        report.open(options.video)
    late = {'frames': 0}

    def on_result(result: FusionResult, detections: Any, latency_ms: float, service_ms: float) -> None:
        if service_ms > period_ms:  # outputs came after the next trigger: a live system would be late
            late['frames'] += 1
        if report is not None:
            with lock:
                report.add(result, detections, latency_ms)

    service.on_result = on_result
    started = time.perf_counter()
    copied = copy_failed = 0
    try:
        if options.out_bag is not None:
            writer = BagWriter(options.out_bag, options.storage, overwrite=True).open()
            for info in reader.topics:
                writer.add_topic(info.name, info.msgtype)
            for topic, msgtype in service.publications().items():
                writer.add_topic(topic, msgtype)
        total = sum(info.count for info in reader.topics)
        for message in tqdm(reader.messages(), total=total, desc='replaying', unit='msg', disable=not options.progress):
            if options.realtime:
                wait = (message.stamp_ns - clock()) / NS
                if wait > 0:
                    time.sleep(wait)
            else:
                clock_ns[0] = message.stamp_ns
            if writer is not None:
                try:
                    with lock:
                        writer.write(message.topic, message.stamp_ns, message.raw)
                    copied += 1
                except BagError:
                    copy_failed += 1  # not even a CDR header: the service counts it as unreadable too
            for output in service.push(message.topic, message.msgtype, message.raw):
                write_output(output)
            if options.realtime:
                for output in service.poll():
                    write_output(output)
        if not options.realtime:
            clock_ns[0] = reader.end_ns + round(config.sync.timeout_ms * 1e6) + 1  # let the last frames time out
        else:
            time.sleep(config.sync.timeout_ms / 1e3)
        for output in service.flush():
            write_output(output)
    except BaseException:
        if writer is not None:
            writer.abort()
        service.close()
        reader.close()
        raise
    service.close()
    wall_s = time.perf_counter() - started
    duration_s = max(reader.duration_s, 1e-9)
    summary = service.summary()
    summary.update({
        'recordings': [str(p) for p in paths],
        'mode': 'realtime' if options.realtime else 'as fast as possible',
        'late_frames': late['frames'] if options.realtime else None,
        'would_be_late_frames': late['frames'] if not options.realtime else None,
        'deadline_ms': round(period_ms, 3),
        'wall_s': round(wall_s, 3),
        'recording_s': round(duration_s, 3),
        'frames_per_s': round(summary['frames'] / wall_s, 3) if wall_s > 0 else None,
        'realtime_factor': round(duration_s / wall_s, 3) if wall_s > 0 else None,
        'truncated_files': [str(t.path) for t in reader.truncated] if hasattr(reader, 'truncated') else [],
        'output_bag': str(options.out_bag) if options.out_bag else None,
        'messages_copied': copied, 'messages_not_copied': copy_failed, 'outputs_written': written['outputs'],
        'device': str(next(pipeline.net.parameters()).device),
    })
    reader.close()
    if writer is not None:
        writer.close()
    if report is not None:
        summary['report'] = str(report.directory)
        report.close(summary)
    return summary

