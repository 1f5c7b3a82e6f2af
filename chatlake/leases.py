"""Leases in Redis: one process at a time holds a name (an ingest consumer, the outbox
relay, a Kafka partition), renewed while it runs.

A lease is a key holding `host:pid:token` with a TTL. It is taken when free, renewed by
its holder (on a thread, and before anything that must not happen under a lost name),
and given back on a clean stop. A lease left by a killed process on this host is taken
over at once (its pid is gone); one held elsewhere expires after `ttl_ms`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

import structlog
from redis import Redis

from chatlake.errors import ChatlakeError

LEASE_MS = 30_000
_log = structlog.get_logger("chatlake.leases")

# Take the lease when it is ours (a renewal: 1), free (2: another process may have used
# the name since we last held it), or held by the holder we were told is dead (ARGV[3]);
# else answer who holds it.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or holder == false or holder == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if holder == ARGV[1] then return 1 end
  return 2
end
return holder
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseTaken(ChatlakeError):
    """Another live process holds the lease (`host`, `pid`), or this one lost it."""

    def __init__(self, message: str, host: str = "", pid: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.pid = pid


def dead_here(holder: str) -> bool:
    """Whether the lease holder was a process on this host that no longer runs."""
    host, pid = holder.rsplit(":", 2)[:2]
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class Lease:
    """The lease on `key`, for this process."""

    def __init__(self, redis: Redis, key: str, ttl_ms: int = LEASE_MS) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.held = threading.Event()  # set while held and kept; cleared when lost or given back
        self.claimed = False  # between `claim` and `release`, even once the lease is lost

    def try_claim(self) -> bool:
        """Take the lease if it is free (or its holder died on this host); False when a
        live process holds it. Not kept on a thread: renew it yourself."""
        holder: Any = self.redis.eval(_CLAIM, 1, self.key, self.token, self.ttl_ms, "")
        if holder in (1, 2):
            self.held.set()
            return True
        holder = holder.decode()
        if dead_here(holder):
            _log.warning("lease_taken_over", key=self.key, dead=holder)
            if self.redis.eval(_CLAIM, 1, self.key, self.token, self.ttl_ms, holder) == 2:
                self.held.set()
                return True
        return False

    def holder(self) -> tuple[str, str]:
        """(host, pid) of the current holder ("", "" if free)."""
        raw: Any = self.redis.get(self.key)
        if raw is None:
            return "", ""
        host, pid = raw.decode().rsplit(":", 2)[:2]
        return host, pid

    def claim(self, what: str) -> None:
        """Take the lease (LeaseTaken if a live process holds it) and keep it renewed on a
        thread until `release`."""
        if not self.try_claim():
            host, pid = self.holder()
            raise LeaseTaken(f"{what} is already running (pid {pid} on {host})", host, pid)
        self.keep()

    def keep(self) -> None:
        """Keep the lease just taken (`try_claim`) renewed on a thread until `release`."""
        self.claimed = True
        threading.Thread(target=self._keep, name=f"lease:{self.key}", daemon=True).start()

    def _keep(self) -> None:
        while self.held.is_set():
            time.sleep(self.ttl_ms / 3000)
            try:
                if self.held.is_set():
                    self.renew()
            except LeaseTaken:
                return
            except Exception as exc:  # Redis away: the next beat or the caller tries again
                _log.warning("lease_renewal_failed", key=self.key, error=str(exc))

    def renew(self) -> None:
        """Keep the lease; LeaseTaken when it was lost, or lapsed (then another process may
        have acted under the name meanwhile)."""
        if self.redis.eval(_CLAIM, 1, self.key, self.token, self.ttl_ms, "") != 1:
            self.held.clear()
            raise LeaseTaken(f"the lease {self.key} was lost")

    def check(self) -> None:
        """Before acting under the name: still held (renewed now)."""
        if self.claimed and not self.held.is_set():
            raise LeaseTaken(f"the lease {self.key} was lost")
        self.renew()

    def release(self) -> None:
        """Give the lease back (the name is free at once)."""
        self.claimed = False
        if self.held.is_set():
            self.held.clear()
            self.redis.eval(_RELEASE, 1, self.key, self.token)
