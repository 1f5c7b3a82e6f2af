"""The lock that keeps a local lake table's writers and its cleaners apart.

Appenders (the ingest worker) write data files and then commit them; between the two the
files are on disk yet referenced by no version. Erasure, retention and maintenance delete
exactly such unreferenced files and the old log entries. So on a local lake every writer
holds the table's lock shared while it writes and commits, and every cleaner holds it
exclusive while it deletes rows, files or log entries: a cleaner then never sees a
writer's half-done commit (every unreferenced file it finds is an orphan, whatever its
age) and a writer never commits against a log that is being cleaned.

Why a lock rather than an age limit ("only unreferenced files older than N minutes"): an
orphan that holds a data subject's text must go now, not in N minutes, or the erasure
cannot certify; and a writer stalled longer than N would lose its files. flock(2) locks
die with their process, so a killed writer never blocks a cleaner.

Two files, so a cleaner cannot be starved by writers that overlap without pause: a writer
passes a gate (shared, released at once) before taking the commit lock; a cleaner closes
the gate (exclusive), then waits for the writers inside to finish.

On object storage (`s3://…`) there is nothing to flock: writers rely on Delta's commit
protocol alone, and erasure and retention refuse to run there (lake/erasure.py).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

GATE = "_chatlake_gate.lock"  # "_"-prefixed: Delta readers and vacuum leave it alone
COMMIT = "_chatlake_commit.lock"


def local_path(uri: str) -> Path | None:
    """The table's directory when the lake is local, else None."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://"))


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def writing(uri: str) -> Iterator[None]:
    """Held by an appender from before it writes its data files until its commit is done
    (or its files are removed): shared, so writers run side by side."""
    root = local_path(uri)
    if root is None:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        with _flock(root / GATE, fcntl.LOCK_SH):
            held.enter_context(_flock(root / COMMIT, fcntl.LOCK_SH))
        yield


@contextmanager
def cleaning(uri: str) -> Iterator[None]:
    """Held by erasure, retention and maintenance while they delete rows, data files or
    log entries: exclusive, once every writer inside has finished its commit."""
    root = local_path(uri)
    if root is None:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with _flock(root / GATE, fcntl.LOCK_EX), _flock(root / COMMIT, fcntl.LOCK_EX):
        yield
