"""What a run's results came from: input checksums, the effective configuration, versions.

Input files are identified by their content (sha256), not their modification time: a frame
replaced by another file with an older mtime (``cp -p``, ``rsync -t``) is reprocessed. Hashing a
night once costs about a second per GB; the result is cached by path, size, mtime, ctime and
inode, which no copy can preserve all of, so later runs hash only new or touched files.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .io import atomic_path


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def checksums(paths: list[str], cache_file: str | os.PathLike, threads: int | None = None) -> dict[str, str]:
    """sha256 of every readable file in ``paths`` (unreadable ones are left out), using and
    updating the JSON cache ``cache_file`` (path -> [size, mtime_ns, ctime_ns, inode, sha256]),
    on ``threads`` threads (default: the machine's cores; at most 8)."""
    cache_file = Path(cache_file)
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    result, todo = {}, {}
    for p in paths:
        try:
            ident = _identity(os.stat(p))
        except OSError:
            continue
        entry = cache.get(p)
        if entry and entry[:4] == ident:
            result[p] = entry[4]
        else:
            todo[p] = ident
    if todo:
        # hashlib releases the GIL on large buffers: threads hash files in parallel
        with ThreadPoolExecutor(max(1, min(8, threads or os.cpu_count() or 1))) as pool:
            digests = dict(zip(todo, pool.map(_try_sha256, todo), strict=True))
        for p, digest in digests.items():
            if digest:
                result[p] = digest
                cache[p] = [*todo[p], digest]
        with atomic_path(cache_file) as tmp:
            tmp.write_text(json.dumps(cache, sort_keys=True))
    return result


def _try_sha256(path: str) -> str | None:
    try:
        return sha256(path)
    except OSError:
        return None
