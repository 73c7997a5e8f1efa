"""Launch helpers shared by the CUDA kernels: the block count for n threads, and zeroed device arrays.

numba.cuda is imported on first use only (as in every module here), so importing this needs no GPU;
the fill kernel reads ``cuda`` as a module global so numba's CUDA simulator can substitute its own.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ['THREADS', 'blocks', 'device_zeros']

THREADS = 128  # threads per block for the one-thread-per-element kernels

cuda: Any = None


def blocks(n: int, threads: int = THREADS) -> int:
    """Blocks of ``threads`` that cover ``n`` threads (at least one: a launch needs a block)."""
    return max(1, (n + threads - 1) // threads)


def _fill_zero_kernel(flat):
    t = cuda.grid(1)
    if t < flat.shape[0]:
        flat[t] = 0.0


@functools.cache
def _fill_zero() -> Any:
    global cuda
    from numba import cuda

    return cuda.jit(_fill_zero_kernel)


def device_zeros(shape: tuple[int, ...], dtype: type = np.float32) -> Any:
    """A device array of ``shape`` filled with zeros on the device (no host copy)."""
    fill = _fill_zero()
    array = cuda.device_array(shape, dtype)
    size = int(np.prod(shape))
    if size:
        fill[blocks(size), THREADS](array.reshape(size))
    return array
