"""The replay report's files: the bird's-eye-view video and a self-contained ``index.html``.

``mmfusion replay BAG --report DIR`` writes ``summary.json``, the pictures and the video into DIR,
then calls :func:`write_index_html` to tie them together. The page has no external CSS, JavaScript
or fonts and loads nothing from the network: copy the folder anywhere and open it.
"""

from __future__ import annotations

import html
import json
import math
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from mmfusion_ros.errors import ReportError

__all__ = ['BevVideo', 'write_index_html']


class BevVideo:
    """An MP4 (fourcc ``mp4v``) of pictures, opened on the first :meth:`write`.

    The video takes the first picture's size, rounded up to even numbers (the MPEG-4 encoder drops
    an odd last row or column; the padding is black); later pictures of another size are resized to
    the first one's. Use as a context manager; ``frames`` counts the pictures written. A video that
    was never written to leaves no file.
    """

    def __init__(self, path: str | Path, fps: float, *, fourcc: str = 'mp4v') -> None:
        self.path = Path(path)
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ReportError(f'BevVideo({self.path}): fps must be a positive number, got {fps!r}')
        if len(fourcc) != 4:
            raise ReportError(f'BevVideo({self.path}): fourcc must be 4 characters, got {fourcc!r}')
        if not self.path.parent.is_dir():
            raise ReportError(f'BevVideo: folder {self.path.parent} does not exist (for {self.path.name})')
        self.fps = float(fps)
        self.fourcc = fourcc
        self.frames = 0
        self.picture_size: tuple[int, int] | None = None  # (width, height) of the first picture
        self.size: tuple[int, int] | None = None  # (width, height) of the video: picture_size made even
        self._writer: cv2.VideoWriter | None = None
        self._closed = False

    def __enter__(self) -> BevVideo:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def write(self, picture: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR picture."""
        if self._closed:
            raise ReportError(f'BevVideo({self.path}): write after close')
        picture = np.asarray(picture)
        if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise ReportError(f'BevVideo({self.path}): frame {self.frames} must be (H, W, 3) uint8 BGR, got '
                              f'{picture.shape} {picture.dtype}')
        if self._writer is None:
            self._open(picture.shape[1], picture.shape[0])
        assert self.picture_size is not None and self.size is not None and self._writer is not None
        if (picture.shape[1], picture.shape[0]) != self.picture_size:
            picture = cv2.resize(picture, self.picture_size, interpolation=cv2.INTER_AREA)
        if self.size != self.picture_size:
            picture = cv2.copyMakeBorder(picture, 0, self.size[1] - picture.shape[0], 0,
                                         self.size[0] - picture.shape[1], cv2.BORDER_CONSTANT, value=(0, 0, 0))
        self._writer.write(np.ascontiguousarray(picture))
        self.frames += 1

    def close(self) -> None:
        """Finish the file; further writes are errors. Closing twice does nothing."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._closed = True

    def _open(self, width: int, height: int) -> None:
        self.picture_size = (width, height)
        self.size = (width + width % 2, height + height % 2)
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
        if not writer.isOpened():
            raise ReportError(f'BevVideo: OpenCV cannot open {self.path} for writing (fourcc {self.fourcc!r}, '
                              f'{self.size[0]}x{self.size[1]} at {self.fps:g} fps); is the folder writable and '
                              f'does this OpenCV build have an MP4 encoder?')
        self._writer = writer


# ---------------------------------------------------------------------------------------------------
# index.html


HEADLINE = (('frames', 'frames'), ('detections', 'detections'), ('flagged', 'flagged'), ('dropped', 'dropped'))

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #16181b; color: #e4e4e4; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.figures { display: flex; flex-wrap: wrap; gap: 0.8em; }
.figure { background: #24272b; padding: 0.6em 1em; border-radius: 6px; min-width: 7em; }
.figure .value { font-size: 1.5em; font-weight: 600; } .figure .name { color: #9aa0a6; font-size: 0.85em; }
table { border-collapse: collapse; } th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #33373c; }
td.number { text-align: right; font-variant-numeric: tabular-nums; } th { text-align: left; color: #9aa0a6; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figure img, video { max-width: 100%; border: 1px solid #33373c; }
figcaption { color: #9aa0a6; font-size: 0.9em; } a { color: #8ab4f8; }
"""


def write_index_html(report_dir: Path, summary: Mapping[str, Any], pictures: Sequence[Mapping[str, str]],
                     video: str | None) -> Path:
    """Write ``report_dir/index.html`` and return its path.

    ``summary``: the figures of the run; the page shows ``frames``, ``detections``, ``flagged``,
    ``latency_ms`` (its ``p50`` and ``p99``) and ``dropped`` first, a timing table from
    ``stages_ms`` (stage -> {statistic: milliseconds}, with whichever statistics each stage has),
    and every other entry in a table. ``pictures``: ``{'path': ..., 'caption': ...}`` with paths
    relative to ``report_dir``; ``video`` likewise, or ``None``. Every text is HTML-escaped.
    """
    report_dir = Path(report_dir)
    for k, picture in enumerate(pictures):
        if 'path' not in picture:
            raise ReportError(f'pictures[{k}]: has no "path" (keys: {", ".join(map(str, picture)) or "none"})')
    links = [_relative_link(str(p['path']), f'pictures[{k}].path') for k, p in enumerate(pictures)]
    video_link = None if video is None else _relative_link(str(video), 'video')

    title = str(summary.get('title', f'mmfusion replay report: {report_dir.name}'))
    body = [f'<h1>{_text(title)}</h1>', _headline(summary)]
    stages = summary.get('stages_ms')
    if isinstance(stages, Mapping) and stages:
        body += ['<h2>Timing per stage (ms)</h2>', _timing_table(stages)]
    if video_link is not None:
        body += ['<h2>Bird\'s-eye view</h2>',
                 f'<video src="{video_link}" controls muted loop preload="metadata">'
                 f'<a href="{video_link}">{_text(video)}</a></video>',
                 f'<p><a href="{video_link}">download the video</a> (MPEG-4 part 2; some browsers do not '
                 'play it inline)</p>']
    if pictures:
        body.append('<h2>Pictures</h2>')
        for picture, link in zip(pictures, links):
            caption = _text(picture.get('caption', ''))
            body.append(f'<figure><a href="{link}"><img src="{link}" alt="{caption}" loading="lazy"></a>'
                        f'<figcaption>{caption}</figcaption></figure>')
    others = {k: v for k, v in summary.items()
              if k not in {'title', 'stages_ms', 'latency_ms'} | {key for key, _ in HEADLINE}}
    if others:
        body += ['<h2>Summary</h2>', '<table>']
        body += [f'<tr><th>{_text(k)}</th><td>{_text(_figure(v))}</td></tr>' for k, v in others.items()]
        body.append('</table>')

    page = '\n'.join(['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
                      f'<title>{_text(title)}</title>', f'<style>{_STYLE}</style>', '</head>', '<body>',
                      *body, '</body>', '</html>', ''])
    path = report_dir / 'index.html'
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding='utf-8')
    except OSError as err:
        raise ReportError(f'cannot write {path}: {err}') from err
    return path


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _relative_link(path: str, what: str) -> str:
    """An escaped, percent-encoded link to a file inside the report folder."""
    parsed = urllib.parse.urlsplit(path)
    if not path or parsed.scheme or parsed.netloc or path.startswith('/') or Path(path).is_absolute():
        raise ReportError(f'{what}: {path!r} must be a path relative to the report folder')
    return _text(urllib.parse.quote(path, safe='/'))


def _figure(value: object) -> str:
    """A summary value as short text: numbers rounded, mappings as ``key: value`` pairs."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f'{value:,}'
    if isinstance(value, float):
        return f'{value:.4g}' if abs(value) < 1e5 else f'{value:,.0f}'
    if isinstance(value, Mapping):
        return ', '.join(f'{k}: {_figure(v)}' for k, v in value.items()) or '-'
    if isinstance(value, (list, tuple)):
        return ', '.join(_figure(v) for v in value) or '-'
    return json.dumps(value) if not isinstance(value, str) else value


def _headline(summary: Mapping[str, Any]) -> str:
    figures = []
    for key, name in HEADLINE:
        value = summary.get(key)
        if isinstance(value, Mapping):  # e.g. dropped frames by reason: the total, then the breakdown
            total = sum(v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool))
            figures.append((f'{name} ({_figure(value)})', total))
        elif value is not None:
            figures.append((name, value))
    latency = summary.get('latency_ms')
    if isinstance(latency, Mapping):
        figures += [(f'latency {q} (ms)', latency[q]) for q in ('p50', 'p99') if q in latency]
    elif latency is not None:
        figures.append(('latency (ms)', latency))
    cards = [f'<div class="figure"><div class="value">{_text(_figure(value))}</div>'
             f'<div class="name">{_text(name)}</div></div>' for name, value in figures]
    return '<div class="figures">' + ''.join(cards) + '</div>'


def _timing_table(stages: Mapping[str, Any]) -> str:
    """One row per stage, one column per statistic any stage has; blank where a stage lacks it."""
    table = {str(stage): {str(k): v for k, v in statistics.items()} if isinstance(statistics, Mapping) else {}
             for stage, statistics in stages.items()}
    columns: list[str] = []
    for statistics in table.values():
        columns += [k for k in statistics if k not in columns]
    rows = ['<table>', '<tr><th>stage</th>' + ''.join(f'<th>{_text(c)}</th>' for c in columns) + '</tr>']
    for stage, statistics in table.items():
        cells = ''.join(f'<td class="number">{_text(_milliseconds(statistics.get(c)))}</td>' for c in columns)
        rows.append(f'<tr><th>{_text(stage)}</th>{cells}</tr>')
    rows.append('</table>')
    return '\n'.join(rows)


def _milliseconds(value: object) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.2f}'
    return _figure(value)
