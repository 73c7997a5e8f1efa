"""One timer for every stage: the timed run is the real run.

Usage::

    timer = StageTimer()
    with timer.frame():                 # one pipeline step
        with timer.stage('geometry'):
            ...
        with timer.stage('encoders'):
            ...
    timer.summary()                     # {'geometry': {'p50': ..., 'p99': ..., 'mean': ..., 'count': ...}, ...}

Durations are wall-clock milliseconds from ``time.perf_counter_ns``. On a GPU the caller passes a
``synchronize`` callable (``torch.cuda.synchronize``) so a stage's time includes its kernels rather
than only their launch. Samples are kept in bounded rings, so a node running for days uses constant
memory; the summary is over the most recent ``window`` frames.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

__all__ = ['FRAME', 'StageTimer']

FRAME = 'total'  # the key under which whole frames are recorded


class StageTimer:
    """Per-stage wall-clock durations over a sliding window of frames."""

    def __init__(self, window: int = 2000, synchronize: Callable[[], None] | None = None) -> None:
        if window < 1:
            raise ValueError(f'StageTimer window must be at least 1, got {window}')
        self._window = window
        self._synchronize = synchronize
        self._samples: dict[str, deque[float]] = {}
        self._last: dict[str, float] = {}
        self._open: list[str] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as ``name``; nested stages are recorded as ``outer/inner``.

        The frame itself is not part of the path: a stage directly inside ``frame()`` is ``name``.
        """
        key = '/'.join([*(s for s in self._open if s != FRAME), name])
        self._open.append(name)
        if self._synchronize is not None:
            self._synchronize()
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            if self._synchronize is not None:
                self._synchronize()
            self._record(key, (time.perf_counter_ns() - start) / 1e6)
            self._open.pop()

    def frame(self):  # noqa: ANN201 - a context manager like stage()
        """Time one whole pipeline step; stages inside are recorded under their own names."""
        return self.stage(FRAME)

    def _record(self, key: str, duration_ms: float) -> None:
        ring = self._samples.get(key)
        if ring is None:
            ring = self._samples[key] = deque(maxlen=self._window)
        ring.append(duration_ms)
        self._last[key] = duration_ms

    def record(self, name: str, duration_ms: float) -> None:
        """Add a duration measured elsewhere (e.g. latency from sensor stamp to publish)."""
        if not duration_ms >= 0:
            raise ValueError(f'StageTimer.record({name!r}): duration must be >= 0, got {duration_ms}')
        self._record(name, float(duration_ms))

    @property
    def last(self) -> dict[str, float]:
        """The most recent duration of every stage, in ms."""
        return dict(self._last)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per stage: count, mean, p50, p90, p99 and max over the window, in ms."""
        out = {}
        for key, ring in self._samples.items():
            values = np.fromiter(ring, dtype=np.float64, count=len(ring))
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            out[key] = {'count': int(values.size), 'mean': float(values.mean()), 'p50': float(p50),
                        'p90': float(p90), 'p99': float(p99), 'max': float(values.max())}
        return out

    def reset(self) -> None:
        self._samples.clear()
        self._last.clear()
