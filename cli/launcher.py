"""`chatlake up`: start the stores, migrate, seed the demo tenant, run the platform's processes.

Each process (the API, the ingest worker, Dagster's webserver and daemon, Streamlit, the
demo seed) is a child that `up` supervises under `cli.guard`: one that exits is
restarted with backoff, a store that dies is started again; `/readyz` reads how each is
from `$CHATLAKE_HOME/run/up.json`. Ctrl-C or SIGTERM stops the children, then the stores;
when `up` itself dies, its guards take the children's process trees down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatlake.db.migrate import upgrade
from chatlake.embedded import Services, http_ready
from chatlake.errors import ChatlakeError
from chatlake.runstatus import status_path
from chatlake.settings import Settings
from chatlake.tenants import ControlPlane, control_plane

DEMO_TENANT = "demo"
DEMO_EMAIL = "demo@chatlake.local"
DEMO_PLAN = "starter"


def run_control(settings: Settings, action: Any) -> Any:
    """Run the coroutine `action(control_plane)` to completion."""

    from realtime.engine.flows.engine import sample_flow

    async def run() -> Any:
        async with control_plane(settings, sample_flow()) as control:
            return await action(control)

    return asyncio.run(run())


def seed_demo_tenant(settings: Settings) -> dict[str, Any]:
    """The demo tenant, a working API key and a dashboards login (an analyst), kept in
    `$CHATLAKE_HOME/demo-tenant.json` (readable by its owner only)."""
    path = settings.home / "demo-tenant.json"

    async def ensure(control: ControlPlane) -> dict[str, Any]:
        from chatlake.apikeys import parse_api_key

        if path.exists():
            stored = json.loads(path.read_text())
            key = parse_api_key(stored.get("api_key", ""))
            if key is not None and await control.authenticate_from_store(key):
                return dict(stored)
        tenant, issued = await control.create_tenant(
            DEMO_TENANT, settings.default_rate_limit,
            plan=DEMO_PLAN if DEMO_PLAN in settings.billing_plans else settings.default_plan,
            actor="chatlake-up",
        )  # fmt: skip
        return {"tenant_id": tenant.tenant_id, "name": tenant.name, "api_key": issued.api_key}

    demo: dict[str, Any] = run_control(settings, ensure)
    if "dashboard_password" not in demo:
        demo.update(_demo_login(settings, demo["tenant_id"]))
    save_demo(settings, demo)
    return demo


def _demo_login(settings: Settings, tenant_id: str) -> dict[str, str]:
    from chatlake.db import owner_connection
    from chatlake.secrets import secret_box
    from chatlake.users import create_user

    url = Services(settings).endpoints().database_url
    with owner_connection(url) as conn:  # a login whose password was lost is replaced
        conn.execute("delete from users where email = %s", (DEMO_EMAIL,))
    user = create_user(url, secret_box(settings), tenant_id, DEMO_EMAIL, "analyst")
    return {"dashboard_email": user["email"], "dashboard_password": user["password"]}


def save_demo(settings: Settings, demo: dict[str, Any]) -> None:
    fd = os.open(settings.home / "demo-tenant.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(demo, handle, indent=2)


def seed_demo_data(settings: Settings) -> dict[str, Any]:
    """The demo's conversations (through the API code and the running ingest worker) and
    the pipeline over them, once: what `up` runs as its `seed` child. A start that failed
    after sending them only reruns the pipeline."""
    from cli.demo import build_demo, send_demo_conversations

    path = settings.home / "demo-tenant.json"
    demo = dict(json.loads(path.read_text()))
    seeded: dict[str, Any] = {}
    if demo.get("seeded") is True:
        return seeded
    if demo.get("seeded") != "sent":
        seeded.update(send_demo_conversations(settings, demo))
        demo["seeded"] = "sent"
        save_demo(settings, demo)
    seeded.update(build_demo(settings))
    demo["seeded"] = True
    save_demo(settings, demo)
    return seeded


BACKOFF_S = (2.0, 4.0, 8.0, 16.0, 30.0)  # between restarts of a child or a store
STABLE_S = 60.0  # a child that ran this long before it exited starts its backoff afresh
STORE_ATTEMPTS = 5  # a store that does not come back after these many starts stops `up`
SEED_ATTEMPTS = 5  # the demo seed is retried these many times, then left
GRACE_S = 8.0  # a stopping child's tree gets this long after SIGTERM, then SIGKILL
TICK_S = 0.5


class StoreLost(ChatlakeError):
    pass


@dataclass
class Child:
    name: str
    args: list[str]
    ready_url: str | None = None  # polled until it answers; None: started is ready
    process: subprocess.Popen[bytes] | None = field(default=None)
    env: dict[str, str] | None = None
    cwd: str | None = None
    ready_timeout: float = 60.0
    once: bool = False  # a job (the demo seed): done when it exits 0, else retried
    status: str = "stopped"  # starting, up, running (a job), down (restart pending), done, failed
    restarts: int = 0
    failures: int = 0  # in a row, for the backoff
    last_exit: int | None = None
    started_at: float = 0.0
    retry_at: float | None = None


class Launcher:
    """Starts the stores and the children, then supervises them: a child that exits is
    restarted with backoff (and logged), a store that dies too; `up` stops on Ctrl-C or
    SIGTERM (any time, the demo seed included) or when a store cannot be brought back.
    Each child runs under `cli.guard`, so its whole process tree dies with `up`."""

    def __init__(
        self,
        settings: Settings,
        port: int,
        workers: int,
        dagster: bool,
        dashboards: bool,
        dagster_port: int = 3000,
        dashboards_port: int = 8501,
        seed: bool = True,
    ) -> None:
        self.settings = settings
        self.dashboards_port = dashboards_port
        self.seed = seed
        self.port = port
        self.dagster_port = dagster_port
        self.workers = workers
        self.dagster = dagster
        self.dashboards = dashboards
        self.services = Services(settings)
        self.children: list[Child] = []
        self.stores: dict[str, dict[str, Any]] = {}
        self._written: dict[str, Any] | None = None

    def _planned_children(self) -> list[Child]:
        api = Child(
            "api",
            [
                sys.executable,
                "-m",
                "chatlake",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            ready_url=f"http://127.0.0.1:{self.port}/readyz",
            # erasure requests launch their Dagster job on the webserver `up` runs
            env={**os.environ, "CHATLAKE_DAGSTER_URL": f"http://127.0.0.1:{self.dagster_port}"}
            if self.dagster
            else None,
        )
        ingest = Child("ingest", [sys.executable, "-m", "chatlake", "ingest"])
        children = [api, ingest]
        if self.settings.event_bus == "kafka":  # the outboxes to Kafka, for the ingest
            children.append(Child("relay", [sys.executable, "-m", "chatlake", "relay"]))
        if self.dagster:
            children += self._dagster_children()
        if self.dashboards:
            children.append(self._dashboards_child())
        return children

    def _dashboards_child(self) -> Child:
        """Streamlit serving dashboards/app.py on 127.0.0.1:<dashboards_port>."""
        from dashboards.dbrole import child_environment as dashboards_environment

        app = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
        return Child(
            "dashboards",
            [sys.executable, "-m", "streamlit", "run", str(app),
             "--server.address", "127.0.0.1", "--server.port", str(self.dashboards_port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--client.showErrorDetails", "none",
             "--client.toolbarMode", "viewer"],
            ready_url=f"http://127.0.0.1:{self.dashboards_port}/_stcore/health",
            env=dashboards_environment(self.settings),  # its own DB role's URL, not the owner's
        )  # fmt: skip

    def _dagster_children(self) -> list[Child]:
        """The webserver (UI) and the daemon (runs the sensor and the schedules), on the
        instance under $CHATLAKE_HOME/dagster, loading workspace.yaml's code location."""
        from pipelines.run import dagster_home

        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "DAGSTER_HOME": dagster_home(self.settings),
               "CHATLAKE_HOME": str(self.settings.home)}  # fmt: skip
        bin_dir = Path(sys.executable).parent
        workspace = ["-w", str(Path(root) / "workspace.yaml")]
        webserver = Child(
            "dagster-webserver",
            [str(bin_dir / "dagster-webserver"), *workspace,
             "-h", "127.0.0.1", "-p", str(self.dagster_port)],
            ready_url=f"http://127.0.0.1:{self.dagster_port}/server_info",
            env=env, cwd=root, ready_timeout=180.0,
        )  # fmt: skip
        daemon = Child(
            "dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", *workspace],
            env=env, cwd=root,
        )  # fmt: skip
        return [webserver, daemon]

    def start(self) -> dict[str, Any]:
        started = self.services.start()
        self.stores = {name: {"status": "up", "failures": 0} for name in started}
        migration = upgrade(self.services.endpoints().database_url)
        demo = seed_demo_tenant(self.settings)
        planned = self._planned_children()
        core = 3 if self.settings.event_bus == "kafka" else 2
        for child in planned[:core]:  # the API, the ingest worker (and the relay)
            self._start(child)
        api = planned[0]
        self._until(lambda: api.status == "up", api.ready_timeout, api)
        if self.seed and demo.get("seeded") is not True:
            # the demo's conversations reach the lake through the running ingest worker;
            # a seed that fails is retried in the background, the rest starts anyway
            seed = Child("seed", [sys.executable, "-m", "chatlake", "seed-demo"], once=True)
            print(f"seeding the demo tenant (log: {self._log_path(seed)})…", file=sys.stderr)
            self._start(seed)
            self._until(lambda: seed.status != "running", None)
            if seed.status != "done":
                print("the demo seed failed; `up` retries it in the background", file=sys.stderr)
        if self.dagster:
            self._dagster_storage()
        for child in planned[core:]:
            self._start(child)
        for child in planned[core:]:
            self._until(lambda c=child: c.status == "up", child.ready_timeout)
        return {"services": started, "migration": migration, "demo": demo}

    def _dagster_storage(self) -> None:
        """Create (or migrate) the Dagster instance's SQLite storages once, from here: the
        webserver's code server and the daemon, started together, would otherwise race to
        create the same database and can leave two alembic heads in it, after which the
        code location never loads (dagster-io/dagster#27390)."""
        from pipelines.run import dagster_home

        env = {**os.environ, "DAGSTER_HOME": dagster_home(self.settings)}
        dagster = str(Path(sys.executable).parent / "dagster")
        done = subprocess.run([dagster, "instance", "migrate"], env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        if done.returncode != 0:
            raise ChatlakeError(f"dagster instance migrate failed: {done.stderr[-1000:]}")

    def _log_path(self, child: Child) -> Path:
        return self.settings.run_dir / f"{child.name}.log"

    def _start(self, child: Child) -> None:
        """Start `child` under the guard, in a session of its own (Ctrl-C reaches `up`
        alone, which stops the children in order); its output goes to its log."""
        if child not in self.children:
            self.children.append(child)
        guard = [sys.executable, "-m", "cli.guard", "--parent", str(os.getpid()),
                 "--grace", str(GRACE_S), "--"]  # fmt: skip
        with open(self._log_path(child), "ab") as log:
            child.process = subprocess.Popen(
                [*guard, *child.args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env=child.env, cwd=child.cwd,
            )  # fmt: skip
        child.status = "running" if child.once else "starting"
        child.started_at, child.retry_at = time.monotonic(), None

    def _until(self, done: Any, timeout: float | None, fail_fast: Child | None = None) -> None:
        """Supervise until `done()`; with `fail_fast`, that child exiting (or not being
        ready within `timeout`) is an error: `up` cannot work without it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            self._tick()
            if fail_fast is not None and fail_fast.status == "down":
                raise ChatlakeError(
                    f"{fail_fast.name} exited with code {fail_fast.last_exit} while starting; "
                    f"see {self._log_path(fail_fast)}"
                )
            if deadline is not None and time.monotonic() > deadline:
                if fail_fast is not None:
                    raise ChatlakeError(f"{fail_fast.name} did not become ready in {timeout:.0f} s")
                return  # the others are supervised on; /readyz says how they are
            if not done():
                time.sleep(TICK_S)

    def _tick(self) -> None:
        """One look at everything: stores first, then the children; then the status file."""
        for service in self.services._embedded():
            self._supervise_store(service)
        now = time.monotonic()
        for child in self.children:
            assert child.process is not None
            code = child.process.poll()
            if child.status in ("starting", "up", "running") and code is not None:
                self._exited(child, code, now)
            elif child.status == "down" and child.retry_at is not None and now >= child.retry_at:
                child.restarts += 1
                self._start(child)
            elif child.status == "starting" and (
                not child.ready_url or http_ready(child.ready_url)
            ):
                child.status = "up"
        self._write_status()

    def _exited(self, child: Child, code: int, now: float) -> None:
        child.last_exit = code
        if child.once and code == 0:
            child.status = "done"
            return
        child.failures = 1 if now - child.started_at >= STABLE_S else child.failures + 1
        if child.once and child.failures >= SEED_ATTEMPTS:
            child.status = "failed"
            print(f"{child.name} failed {child.failures} times; giving up (see "
                  f"{self._log_path(child)})", file=sys.stderr)  # fmt: skip
            return
        delay = BACKOFF_S[min(child.failures, len(BACKOFF_S)) - 1]
        child.status, child.retry_at = "down", now + delay
        print(f"{child.name} exited with code {code}; restarting in {delay:.0f} s "
              f"(see {self._log_path(child)})", file=sys.stderr, flush=True)  # fmt: skip

    def _supervise_store(self, service: Any) -> None:
        """A store that died (killed, crashed) is started again on its port, with backoff;
        one that cannot be brought back stops `up` (StoreLost)."""
        state = self.stores.setdefault(service.name, {"status": "up", "failures": 0})
        if service.running_pid() is not None:
            if state["status"] != "up":
                print(f"{service.name} is back", file=sys.stderr, flush=True)
            state.update(status="up", failures=0, retry_at=None)
            return
        now = time.monotonic()
        if state["status"] == "up":
            print(f"{service.name} is down; restarting it", file=sys.stderr, flush=True)
            state.update(status="down", retry_at=now)
        if state.get("retry_at") is not None and now < state["retry_at"]:
            return
        self._write_status()
        try:
            self.services.start()
        except ChatlakeError as exc:
            state["failures"] += 1
            if state["failures"] >= STORE_ATTEMPTS:
                raise StoreLost(f"{service.name} cannot be brought back: {exc}") from None
            delay = BACKOFF_S[state["failures"] - 1]
            state["retry_at"] = now + delay
            print(f"{service.name} did not start ({exc}); retrying in {delay:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip

    def _write_status(self) -> None:
        components: dict[str, Any] = {
            name: {"status": state["status"]} for name, state in self.stores.items()
        }
        for child in self.children:
            entry: dict[str, Any] = {"status": child.status, "restarts": child.restarts}
            if child.process is not None and child.status in ("starting", "up", "running"):
                entry["pid"] = child.process.pid
            if child.last_exit is not None:
                entry["last_exit"] = child.last_exit
            components[child.name] = entry
        status = {"pid": os.getpid(), "components": components}
        if status != self._written:
            _write_json(status_path(self.settings), status)
            self._written = status

    def wait(self) -> int:
        """Supervise until Ctrl-C/SIGTERM (0) or a store that cannot be brought back (1)."""
        try:
            self._until(lambda: False, None)
        except KeyboardInterrupt:
            return 0
        except StoreLost as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    def shutdown(self) -> None:
        """Every child's tree (SIGTERM, SIGKILL after the grace period), then the stores."""
        # A second Ctrl-C must not cut the shutdown short and leave the stores running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S + 5.0  # the guards kill what is left by then
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_tree(process.pid)
        with contextlib.suppress(OSError):
            status_path(self.settings).unlink()
        self.services.stop()


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for process in tree:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(tree, timeout=5)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


def banner(
    settings: Settings,
    port: int,
    demo: dict[str, Any],
    log_dir: Path,
    dagster_port: int | None = None,
    dashboards_port: int | None = None,
) -> str:
    base = f"http://127.0.0.1:{port}"
    dagster = (
        [f"  Dagster        http://127.0.0.1:{dagster_port}  (lakehouse: chatlake pipeline run)"]
        if dagster_port
        else []
    )
    dashboards = (
        [f"  dashboards     http://127.0.0.1:{dashboards_port}",
         f"  demo login     {demo['dashboard_email']} / {demo['dashboard_password']}"]
        if dashboards_port
        else []
    )  # fmt: skip
    bus = (
        [f"  event bus      Kafka {settings.kafka_bootstrap}, topic {settings.kafka_topic} "
         "(relay running)"]
        if settings.event_bus == "kafka"
        else []
    )  # fmt: skip
    return "\n".join(
        [
            "chatlake is up.",
            f"  API            {base}  (docs {base}/docs)",
            f"  metrics        {base}/metrics",
            "  lake ingest    running  (chatlake ingest --status)",
            *bus,
            *dagster,
            *dashboards,
            f"  home           {settings.home}  (logs in {log_dir})",
            f"  demo tenant    {demo['tenant_id']}",
            f"  demo API key   {demo['api_key']}",
            "",
            "Try it:",
            f"  curl -s {base}/v1/messages \\",
            f"    -H 'Authorization: Bearer {demo['api_key']}' \\",
            "    -H 'Content-Type: application/json' \\",
            """    -d '{"user_id": "alice", "text": "hello"}'""",
            "",
            "Ctrl-C stops everything.",
        ]
    )
