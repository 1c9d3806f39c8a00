"""One run at a time per results folder, and no manual ``--unlock`` after a killed run.

Snakemake locks the results folder (the workflow's working directory) with files in
``.snakemake/locks`` that do not say who holds them, so after ``kill -9`` every later run fails
until ``snakemake --unlock``. Each run also records its process in ``.astroflow/owner.json``:
a lock whose recorded owner has died on this host is stale and removed; a live owner is named.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("astroflow")

OWNER = Path(".astroflow", "owner.json")
LOCKS = Path(".snakemake", "locks")


class RunLockError(RuntimeError):
    """Another run holds the results folder."""


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"snakemake" in cmdline


def claim(out: str | os.PathLike) -> None:
    """Take the results folder ``out`` for this process, clearing the locks a dead run left."""
    out = Path(out)
    locks = [p for p in (out / LOCKS).glob("*.lock")]
    try:
        owner = json.loads((out / OWNER).read_text())
    except (OSError, ValueError):
        owner = None
    if locks:
        if owner is None:
            raise RunLockError(
                f"results folder {out} is locked by a Snakemake run that did not record itself; "
                "if no other run uses it, run once with --unlock"
            )
        if owner["host"] != socket.gethostname() or _alive(owner["pid"]):
            raise RunLockError(
                f"results folder {out} is in use by another run (process {owner['pid']} on "
                f"{owner['host']}); wait for it to finish or stop it"
            )
        for p in locks:
            p.unlink(missing_ok=True)
        log.warning(
            "results folder %s: removed the lock of run %s, which ended without releasing it",
            out,
            owner["pid"],
        )
    (out / OWNER).parent.mkdir(parents=True, exist_ok=True)
    (out / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def release(out: str | os.PathLike) -> None:
    """Forget this process as the owner of ``out`` (Snakemake removes its own locks)."""
    path = Path(out) / OWNER
    try:
        if json.loads(path.read_text())["pid"] == os.getpid():
            path.unlink()
    except (OSError, ValueError, KeyError):
        pass
