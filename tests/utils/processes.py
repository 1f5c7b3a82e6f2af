"""Helpers for tests that drive `chatlake up` as a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

CHATLAKE = str(Path(sys.executable).parent / "chatlake")

READY_LINE = "Ctrl-C stops everything"


def up_banner(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """What `up` prints until it says it is ready (or stops printing, or time runs out)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            break
        lines.append(line)
        if READY_LINE in line:
            break
    return "".join(lines)


def until(what: Any, timeout_s: float, message: str) -> Any:
    """`what()` once it is truthy (polled every 0.1 s); AssertionError with `message` after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(message)


def descendant(up: psutil.Process, *words: str) -> psutil.Process | None:
    """The descendant of `up` running `chatlake … words` (not its guard)."""
    for process in up.children(recursive=True):
        try:
            line = process.cmdline()
        except psutil.Error:
            continue
        if "cli.guard" not in line and all(w in line for w in words):
            return process
    return None


def stop_stores(home: Path) -> None:
    subprocess.run([CHATLAKE, "services", "stop"], env={**os.environ, "CHATLAKE_HOME": str(home)},
                   capture_output=True, timeout=120)  # fmt: skip
