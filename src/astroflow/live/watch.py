"""Which files of the watched folder are completely written.

Capture programs either write a file in place (its size grows for a while) or write it
elsewhere and rename it in. A file is *settled* once its size and modification time have not
changed for ``settle`` seconds; the session then parses it, and a file that does not parse yet
is offered again on the next scan (see :class:`astroflow.live.session.Session`). Watchdog's
file-system events only wake the scan early: the scan itself is a plain directory walk, so the
watcher is correct on file systems without events (network shares) too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from ..classify import image_files

log = logging.getLogger("astroflow.live")


def signature(path: Path) -> tuple[int, int] | None:
    """``(bytes, mtime_ns)`` of a file, or None if it is gone (or a dangling link)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class Arrivals:
    """Settled image files under ``folder`` (recursively), each offered once per signature."""

    def __init__(self, folder, settle: float, exclude=()):
        self.folder, self.settle, self.exclude = Path(folder), settle, [Path(p) for p in exclude]
        self.wake = threading.Event()
        self._pending: dict[Path, tuple[tuple[int, int], float]] = {}  # signature, since when
        self._offered: dict[Path, tuple[int, int]] = {}
        self._observer = None

    def start(self) -> str:
        """Start file-system events; returns how the folder is watched."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer

            wake = self.wake

            class _Wake(FileSystemEventHandler):
                def on_any_event(self, event):
                    wake.set()

            observer = Observer()
            observer.schedule(_Wake(), str(self.folder), recursive=True)
            observer.start()
            self._observer = observer
            return "file-system events and polling"
        except Exception as exc:  # inotify limits, unsupported file systems: polling still works
            log.warning("file-system events unavailable (%s): polling %s", exc, self.folder)
            return "polling"

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)

    def wait(self, timeout: float) -> None:
        """Sleep until a file-system event or ``timeout`` seconds."""
        self.wake.wait(timeout)
        self.wake.clear()

    def scan(self, now: float | None = None) -> list[Path]:
        """Files that settled since the last scan, in path order."""
        now = time.monotonic() if now is None else now
        ready = []
        present = set()
        for path in image_files(self.folder, exclude=self.exclude):
            present.add(path)
            sig = signature(path)
            if sig is None or self._offered.get(path) == sig:
                continue
            seen = self._pending.get(path)
            if seen is None or seen[0] != sig:
                self._pending[path] = (sig, now)
            elif now - seen[1] >= self.settle:
                ready.append(path)
        for path in list(self._pending):
            if path not in present:
                del self._pending[path]
        return sorted(ready)

    def taken(self, path: Path, sig: tuple[int, int]) -> None:
        """``path`` at ``sig`` is dealt with: offer it again only if it changes."""
        self._offered[path] = sig
        self._pending.pop(path, None)

    def again(self, path: Path) -> None:
        """Offer ``path`` again on a later scan (it did not parse yet, or is held)."""
        self._offered.pop(path, None)
