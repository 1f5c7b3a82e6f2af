"""`chatlake up`: start the stores, migrate, seed the demo tenant, run the platform's processes.

Each process (the API now; the ingest worker, Dagster and Streamlit as they land) is a child
that `up` supervises: if one exits, or on Ctrl-C, all of them stop, then the stores.
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

import httpx

from chatlake.db.migrate import upgrade
from chatlake.embedded import Services
from chatlake.errors import ChatlakeError
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


@dataclass
class Child:
    name: str
    args: list[str]
    ready_url: str | None = None  # polled until it answers; None: started is ready
    process: subprocess.Popen[bytes] | None = field(default=None)
    env: dict[str, str] | None = None
    cwd: str | None = None
    ready_timeout: float = 60.0


def wait_http_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ChatlakeError(f"{url} exited with code {process.returncode} while starting")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ChatlakeError(f"{url} did not become ready within {timeout:.0f} s")


class Launcher:
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
        if self.dagster:
            children += self._dagster_children()
        if self.dashboards:
            children.append(self._dashboards_child())
        return children

    def _dashboards_child(self) -> Child:
        """Streamlit serving dashboards/app.py on 127.0.0.1:<dashboards_port>."""
        app = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
        return Child(
            "dashboards",
            [sys.executable, "-m", "streamlit", "run", str(app),
             "--server.address", "127.0.0.1", "--server.port", str(self.dashboards_port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--client.showErrorDetails", "none",
             "--client.toolbarMode", "viewer"],
            ready_url=f"http://127.0.0.1:{self.dashboards_port}/_stcore/health",
            env={**os.environ, "CHATLAKE_HOME": str(self.settings.home)},
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
        migration = upgrade(self.services.endpoints().database_url)
        demo = seed_demo_tenant(self.settings)
        planned = self._planned_children()
        for child in planned[:2]:  # the API and the ingest worker
            self._start(child)
        seeded: dict[str, Any] | None = None
        if self.seed and demo.get("seeded") is not True:
            # first start: the demo's conversations reach the lake through the running
            # ingest worker, and the pipeline runs before Dagster's sensor could race it;
            # a start that failed after sending them only reruns the pipeline
            from chatlake.demo import build_demo, send_demo_conversations

            seeded = {}
            if demo.get("seeded") != "sent":
                seeded.update(send_demo_conversations(self.settings, demo))
                demo["seeded"] = "sent"
                save_demo(self.settings, demo)
            seeded.update(build_demo(self.settings))
            demo["seeded"] = True
            save_demo(self.settings, demo)
        for child in planned[2:]:
            self._start(child)
        return {"services": started, "migration": migration, "demo": demo, "seeded": seeded}

    def _start(self, child: Child) -> None:
        log = open(self.settings.run_dir / f"{child.name}.log", "ab")
        child.process = subprocess.Popen(
            child.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=child.env, cwd=child.cwd,
        )  # Ctrl-C reaches `up` alone, which stops the children in order  # fmt: skip
        self.children.append(child)
        if child.ready_url:
            wait_http_ready(child.ready_url, child.process, child.ready_timeout)

    def wait(self) -> int:
        """Block until Ctrl-C/SIGTERM or a child exits; returns the exit code for `up`."""
        stop = False

        def on_signal(*_: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop:
                for child in self.children:
                    assert child.process is not None
                    if child.process.poll() is not None:
                        print(
                            f"{child.name} exited with code {child.process.returncode}; "
                            f"see {self.settings.run_dir / (child.name + '.log')}",
                            file=sys.stderr,
                        )
                        return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        return 0

    def shutdown(self) -> None:
        # A second Ctrl-C must not cut the shutdown short and leave the stores running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.process:
                try:
                    child.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.process.kill()
        for child in self.children:  # what a child started and left (Dagster's code
            if child.process:  # servers and run workers): each child leads its own group
                _stop_group(child.process.pid)
        self.services.stop()


def _stop_group(pgid: int, timeout_s: float = 20.0) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


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
    return "\n".join(
        [
            "chatlake is up.",
            f"  API            {base}  (docs {base}/docs)",
            f"  metrics        {base}/metrics",
            "  lake ingest    running  (chatlake ingest --status)",
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
