"""The ledger: one line per input file that is done, appended once its outcome is safe on disk.

A light is written here only after the stack it went into was checkpointed with it
(:mod:`astroflow.live.running`), a rejected or unusable file as soon as it is judged. After a
crash or ``kill -9`` at any moment, a restart skips exactly the files listed here: a frame
integrated but not yet listed is in no checkpoint either, so it is integrated again, once. A
line cut short by a crash is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..io import atomic_path

COLUMNS = ("file", "bytes", "mtime_ns", "kind", "stack", "status", "reason")


class Ledger:
    """``OUT/ledger.tsv``; keys are ``(file relative to the watched folder, bytes, mtime_ns)``."""

    def __init__(self, path):
        self.path = Path(path)
        self.rows: dict[tuple[str, int, int], dict] = {}
        if self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):  # a line cut short: drop it before appending
                text = text[: text.rfind("\n") + 1]
                with atomic_path(self.path) as tmp:
                    Path(tmp).write_text(text)
            lines = text.split("\n")
            for line in lines[1:-1]:  # the header, and whatever follows the last newline
                values = line.split("\t")
                if len(values) == len(COLUMNS):
                    row = dict(zip(COLUMNS, values, strict=True))
                    self.rows[self.key(row["file"], int(row["bytes"]), int(row["mtime_ns"]))] = row

    @staticmethod
    def key(file: str, size: int, mtime_ns: int) -> tuple[str, int, int]:
        return (file, int(size), int(mtime_ns))

    def __contains__(self, key) -> bool:
        return key in self.rows

    def record(self, rows: list[dict]) -> None:
        """Append ``rows`` (dicts with :data:`COLUMNS`) durably: one write, flushed and synced."""
        if not rows:
            return
        new = not self.path.exists()
        text = "".join(
            "\t".join(str(r.get(c, "")).replace("\t", " ").replace("\n", " ") for c in COLUMNS) + "\n"
            for r in rows
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, (("\t".join(COLUMNS) + "\n") if new else "").encode() + text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        for r in rows:
            self.rows[self.key(r["file"], r["bytes"], r["mtime_ns"])] = {
                c: str(r.get(c, "")) for c in COLUMNS
            }
