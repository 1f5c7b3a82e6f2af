"""Helpers for tests that drive `chatlake up` as a process."""

from __future__ import annotations

import subprocess
import time

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
