"""The guard `chatlake up` puts between itself and each child: the child's whole process
tree dies with `up`, even when `up` is killed with SIGKILL.

`python -m cli.guard --parent PID --grace S -- COMMAND…` runs COMMAND and:
- asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), and checks the
  parent's pid too (the parent may die before the request is made);
- is a child subreaper (PR_SET_CHILD_SUBREAPER), so what COMMAND starts and leaves behind
  (Dagster's code servers and run workers, dbt, uvicorn's workers) stays its descendant
  and can be found, even when an intermediate process died;
- on SIGTERM/SIGINT/SIGHUP, or when its parent is gone, sends SIGTERM to COMMAND, and
  SIGKILL to every descendant still there after the grace period;
- when COMMAND exits, ends the descendants it left, and exits with COMMAND's code
  (128 + N for a signal N, as a shell reports it).

Linux only (prctl); elsewhere the parent check alone stops the tree, within a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
TICK_S = 0.2


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent check still applies
        pass


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """For `preexec_fn`: the calling process gets `sig` when its parent dies."""
    _prctl(PR_SET_PDEATHSIG, sig)


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _reap() -> list[tuple[int, int]]:
    """Collect every exited child (ours and the orphans that the subreaper inherits)."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _end(processes: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM to each, SIGKILL to those still there after `grace_s`."""
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap()
        if not any(_alive(p) for p in processes):
            return
        time.sleep(0.05)
    for process in _descendants():
        try:
            process.kill()
        except psutil.Error:
            pass


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run(parent: int, grace_s: float, command: list[str]) -> int:
    stopping: list[bool] = []

    def on_signal(*_: object) -> None:
        stopping.append(True)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    die_with_parent()
    if os.getppid() != parent:  # died before we asked
        return 143
    try:
        child = psutil.Popen(command, preexec_fn=die_with_parent)
    except OSError as exc:
        print(f"guard: cannot start {command[0]}: {exc}", file=sys.stderr)
        return 127
    code: int | None = None
    deadline: float | None = None
    while code is None:
        for pid, status in _reap():
            if pid == child.pid:
                code = os.waitstatus_to_exitcode(status)
        if code is not None:
            break
        if (stopping or os.getppid() != parent) and deadline is None:
            deadline = time.monotonic() + grace_s
            try:
                child.terminate()
            except psutil.Error:
                pass
        if deadline is not None and time.monotonic() > deadline:
            for process in [child, *_descendants()]:
                try:
                    process.kill()
                except psutil.Error:
                    pass
        time.sleep(TICK_S)
    _end(_descendants(), grace_s=min(grace_s, 5.0))  # what the command left behind
    _reap()
    return 128 - code if code < 0 else code


def main() -> None:
    args = sys.argv[1:]
    try:
        split = args.index("--")
        options = dict(zip(args[:split:2], args[1:split:2], strict=True))
        parent, grace = int(options["--parent"]), float(options.get("--grace", "10"))
        command = args[split + 1 :]
    except (ValueError, KeyError):
        command = []
    if not command:
        print("usage: python -m cli.guard --parent PID [--grace S] -- COMMAND…",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    sys.exit(run(parent, grace, command))


if __name__ == "__main__":
    main()
