"""The pipeline lock: one pipeline run at a time per `$CHATLAKE_HOME`, across processes.

DuckDB takes one writer per warehouse file, and the lake's silver tables are rewritten by
day, so two runs at once (`chatlake pipeline run`, the seed of `chatlake up`, a run that
Dagster's sensor or a schedule launched) fail on each other. Each takes this lock
(`$CHATLAKE_HOME/run/pipeline.lock`, an fcntl lock through fasteners, released by the
kernel when its holder dies) and a second one waits, saying on stderr for whom.

The lock is reentrant within a process: an in-process run holds it for the whole run, and
the steps inside it (which take it too, for the runs Dagster launches) go straight on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fasteners

_guard = threading.RLock()  # threads of one process share the one fcntl lock
_held: dict[str, tuple[int, int]] = {}  # lock path -> (pid that holds it, depth)


def lock_path(home: Path) -> Path:
    return home / "run" / "pipeline.lock"


def holder(home: Path) -> dict[str, Any] | None:
    """Who holds the lock, as the holder wrote it (None: free or unknown)."""
    try:
        return dict(json.loads(lock_path(home).with_suffix(".holder").read_text()))
    except (OSError, ValueError):
        return None


def _describe(found: dict[str, Any] | None) -> str:
    if not found:
        return "another pipeline run"
    since = time.strftime("%H:%M:%S", time.localtime(found.get("since", 0)))
    return f"{found.get('what', 'a pipeline run')} (pid {found.get('pid')}, since {since})"


@contextlib.contextmanager
def pipeline_lock(
    home: Path, what: str, say: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the pipeline lock of `home` for the block; waits (saying so once, through
    `say`, stderr by default) while another process holds it."""
    path = lock_path(home)
    key = str(path)
    with _guard:
        pid, depth = _held.get(key, (0, 0))
        if pid == os.getpid():  # reentrant (a fork does not inherit the holding)
            _held[key] = (pid, depth + 1)
            try:
                yield
            finally:
                _held[key] = (pid, _held[key][1] - 1)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = fasteners.InterProcessLock(key)
        if not lock.acquire(blocking=False):
            message = f"{what}: waiting for {_describe(holder(home))} to finish…"
            (say or _stderr)(message)
            lock.acquire()
        try:
            _held[key] = (os.getpid(), 1)
            _write_holder(path, what)
            yield
        finally:
            _held.pop(key, None)
            with contextlib.suppress(OSError):
                path.with_suffix(".holder").unlink()
            lock.release()


def _write_holder(path: Path, what: str) -> None:
    tmp = path.with_suffix(f".holder.{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}))
    tmp.replace(path.with_suffix(".holder"))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
