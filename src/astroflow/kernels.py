"""The compiled kernels (``_kernels.c``, built with the package) and the threads that run them.

The C functions are reached through :mod:`ctypes`, which releases the GIL during a call: a
kernel over columns (or rows, or frames) ``a:b`` is split into blocks that run on the kernels'
threads, each block written by one call only, so results are identical for any number of
threads. The threads are :func:`set_threads`'s, or ``ASTROFLOW_THREADS``'s when imported (a
job's Snakemake ``threads``), or the machine's cores (``astroflow live``). Loading takes a
millisecond where numba's cached kernels cost each job ~0.5 s of imports.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _kernels

_lib = ctypes.CDLL(_kernels.__file__)
_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
_SIGNATURES = {
    "af_reject_columns": [_P, _I, _I, _I, _I, ctypes.c_int, _D, _D, ctypes.c_int, _P, _I, _I, _P, _I, _P],
    "af_normalise": [_P, _I, _I, _I, _I, _P, _P],
    "af_grow_mark": [_P, _I, _I, _I, _I, _I, _P],
    "af_grow_judge": [_P, _P, _P, _I, _I, _I, _I, _I, _I, _D, _D],
    "af_grow_settle": [_P, _I, _I, _I, _I],
    "af_combine_columns": [_P, _P, _I, _I, _I, _I, _I, _P, ctypes.c_int, _P, _P, _P, _P],
    "af_rows_pass": [_P, _I, _I, _I, _D, _D, _D, _D, _D, _D, _P, _I, _P, _I],
    "af_columns_pass": [_P, _I, _D, _D, _D, _P, _I, _I, _I, _P, _I],
}
for _name, _args in _SIGNATURES.items():
    getattr(_lib, _name).argtypes = _args
    getattr(_lib, _name).restype = ctypes.c_int  # 0, or -1 where an allocation failed

_threads = int(os.environ.get("ASTROFLOW_THREADS", 0)) or len(os.sched_getaffinity(0))
_pool: ThreadPoolExecutor | None = None


def set_threads(n: int) -> None:
    """Run the kernels on ``n`` threads (a job's Snakemake ``threads``)."""
    global _threads, _pool
    n = max(1, int(n))
    if n != _threads and _pool is not None:
        _pool.shutdown()
        _pool = None
    _threads = n


def get_threads() -> int:
    return _threads


def ptr(a: np.ndarray, dtype) -> int:
    """Address of ``a``'s data, which must be C-contiguous and of ``dtype`` (the C side trusts it)."""
    if a.dtype != dtype or not a.flags.c_contiguous:
        layout = "C-contiguous" if a.flags.c_contiguous else "strided"
        raise TypeError(
            f"kernel argument must be a C-contiguous {np.dtype(dtype)} array, got a {layout} {a.dtype} one"
        )
    return a.ctypes.data


def call(name: str, *args) -> None:
    """One call of the C function ``name``; a failed allocation in it raises MemoryError."""
    if getattr(_lib, name)(*args) != 0:
        raise MemoryError(f"{name}: out of memory")


def blocks(name: str, total: int, block: int, make_args) -> None:
    """Call ``name`` with ``make_args(a, b)`` for each block ``a:b`` of ``range(total)``, on the
    kernels' threads."""
    spans = [(a, min(total, a + block)) for a in range(0, total, block)]
    if _threads == 1 or len(spans) == 1:
        for a, b in spans:
            call(name, *make_args(a, b))
        return
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(_threads)
    # a task per run of blocks, 4 runs a thread: handing the pool each block cost ~50 µs, more
    # than a cheap kernel's block (a band's normalisation took 3x longer on two threads than one)
    per = -(-len(spans) // (4 * _threads))
    runs = [spans[i : i + per] for i in range(0, len(spans), per)]

    def run(part):
        for a, b in part:
            call(name, *make_args(a, b))

    list(_pool.map(run, runs))
