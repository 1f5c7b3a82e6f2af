"""The `chatlake` command line.

Every command finds the embedded stores of its `$CHATLAKE_HOME` (or the URLs in the
environment). Results are JSON on stdout; a user's mistake is one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

import typer

from chatlake.errors import ChatlakeError
from chatlake.settings import Settings, get_settings

app = typer.Typer(
    help="chatlake: a multi-tenant chatbot platform built as a conversational lakehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(help="The embedded PostgreSQL and Redis.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants (platform admin).", no_args_is_help=True)
keys_app = typer.Typer(help="A tenant's API keys.", no_args_is_help=True)
lake_app = typer.Typer(help="The Delta lake.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
pipeline_app = typer.Typer(help="The Dagster lakehouse (pipelines/).", no_args_is_help=True)
secrets_app = typer.Typer(
    help="Secrets stored encrypted (provider credentials).", no_args_is_help=True
)
bench_app = typer.Typer(help="Benchmarks (bench/): print and write JSON.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(lake_app, name="lake")
app.add_typer(secrets_app, name="secrets")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(audit_app, name="audit")
app.add_typer(bench_app, name="bench")
users_app = typer.Typer(help="Tenant users of the dashboards.", no_args_is_help=True)
billing_app = typer.Typer(help="Invoices (pipelines/billing.py).", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(billing_app, name="billing")


def emit(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def _tenant_id(value: str) -> str:
    from uuid import UUID

    try:
        return str(UUID(value))
    except ValueError:
        raise ChatlakeError(f"not a tenant id: {value!r} (expected a UUID)") from None


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="API worker processes")] = 1,
    no_dagster: Annotated[bool, typer.Option("--no-dagster", help="Do not start Dagster")] = False,
    no_dashboards: Annotated[
        bool, typer.Option("--no-dashboards", help="Do not start Streamlit")
    ] = False,
    dagster_port: Annotated[int, typer.Option(help="Dagster webserver port")] = 3000,
    dashboards_port: Annotated[int, typer.Option(help="Streamlit dashboards port")] = 8501,
    no_seed: Annotated[
        bool,
        typer.Option(
            "--no-seed", help="Do not seed the demo tenant's conversations on first start"
        ),
    ] = False,
) -> None:
    """Start everything: stores, migrations, the demo tenant (seeded with a few days of
    conversations on first start), API, ingest, Dagster, dashboards. Ctrl-C stops it all."""
    import signal

    from cli.launcher import Launcher, banner
    from realtime.platform import check_event_bus

    # Ctrl-C stops everything, even when `up` was started from something that ignores
    # SIGINT (a shell's background job, nohup); SIGTERM too, whatever `up` is doing
    # (starting the stores, waiting for the seed): both end in the shutdown below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = get_settings()
    check_event_bus(settings)
    launcher = Launcher(
        settings, port, workers, dagster=not no_dagster, dashboards=not no_dashboards,
        dagster_port=dagster_port, dashboards_port=dashboards_port, seed=not no_seed,
    )  # fmt: skip
    code = 1
    try:
        try:
            started = launcher.start()
            shown_port = None if no_dagster else dagster_port
            typer.echo(
                banner(settings, port, started["demo"], settings.run_dir, shown_port,
                       None if no_dashboards else dashboards_port)
            )  # fmt: skip
            code = launcher.wait()
        except KeyboardInterrupt:
            code = 0  # asked to stop
    finally:
        typer.echo("stopping…", err=True)
        launcher.shutdown()
    raise typer.Exit(code)


@app.command("seed-demo", hidden=True)
def seed_demo() -> None:
    """The demo tenant's conversations and the pipeline over them (`up` runs this as a
    supervised child on first start)."""
    from cli.launcher import seed_demo_data

    emit(seed_demo_data(get_settings()))


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
) -> None:
    """Run only the realtime API (the stores must be running)."""
    import uvicorn

    from chatlake.embedded import Services
    from realtime.platform import check_event_bus

    settings = get_settings()
    check_event_bus(settings)  # clear errors now rather than a traceback per worker
    Services(settings).endpoints()
    if workers > 1:
        metrics_dir = settings.run_dir / f"prometheus-{port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "realtime.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the app logs each request itself, with its request id
        log_config=None,  # the app's JSON logging (realtime.observability) takes uvicorn's too
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


@app.command()
def ingest(
    once: Annotated[bool, typer.Option("--once", help="Drain the streams, then exit")] = False,
    status: Annotated[bool, typer.Option("--status", help="Show lag and throughput")] = False,
    consumer: Annotated[
        str | None, typer.Option(help="Consumer name, stable across restarts")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Entries per Delta commit")] = 5000,
    max_latency_ms: Annotated[
        int, typer.Option(min=1, help="Longest wait for a batch to fill")
    ] = 1000,
) -> None:
    """Stream the event log into the Delta lake, exactly once (long-running)."""

    from chatlake.embedded import Services
    from chatlake.keyspace import redis_sync_client
    from chatlake.logconfig import configure_logging
    from lake.ingest import IngestWorker, default_consumer_name, drain_once, ingest_status

    settings = get_settings()
    redis = redis_sync_client(Services(settings).endpoints().redis_url)
    if settings.event_bus == "kafka":
        _ingest_kafka(settings, redis, once, status, consumer, batch_size, max_latency_ms)
        return
    if status:
        emit(ingest_status(redis, settings.lake_root))
        return
    options: dict[str, Any] = {"batch_size": batch_size, "max_latency_ms": max_latency_ms}
    if once:
        # beside the running worker (`chatlake up`): a name of its own, never a shared one
        worker, results = drain_once(redis, settings.lake_root, consumer, **options)
        rows: dict[str, int] = {}
        for result in results:
            for name, count in result.rows.items():
                rows[name] = rows.get(name, 0) + count
        emit(
            {
                "consumer": worker.consumer,
                "batches": len(results),
                "entries": sum(r.entries for r in results),
                "rows": rows,
                "version": worker.version,
            }
        )
        return
    worker = IngestWorker(
        redis, settings.lake_root, consumer=consumer or default_consumer_name(), **options
    )
    configure_logging(settings.log_level)
    import structlog

    log = structlog.get_logger("chatlake.ingest")
    worker.on_batch = lambda r: log.info(
        "batch", version=r.version, entries=r.entries, rows=r.rows, seconds=round(r.seconds, 3)
    )
    log.info("ingest_started", consumer=worker.consumer, lake=settings.lake_root)
    worker.run(_until_signalled())
    log.info("ingest_stopped", consumer=worker.consumer, **worker.totals)


def _until_signalled() -> Callable[[], bool]:
    """A `should_stop` that turns true on SIGTERM or SIGINT (a worker's clean stop)."""
    import signal

    stopping: list[bool] = []

    def stop(*_: object) -> None:
        stopping.append(True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return lambda: bool(stopping)


def _ingest_kafka(
    settings: Settings,
    redis: Any,
    once: bool,
    status: bool,
    consumer: str | None,
    batch_size: int,
    max_latency_ms: int,
) -> None:
    """`chatlake ingest` on the Kafka bus (lake/kafka_ingest.py)."""
    from chatlake.bus import bootstrap_servers, ensure_topic
    from lake.kafka_ingest import KafkaIngestWorker, kafka_consumer, kafka_status

    bootstrap = bootstrap_servers(settings)
    if not status:
        ensure_topic(settings)  # the relay may not have made it yet
    kafka = kafka_consumer(bootstrap, batch_size)
    try:
        if status:
            emit(kafka_status(redis, kafka, settings.lake_root, settings.kafka_topic))
            return
        name = consumer or f"{socket.gethostname()}-kafka-1"
        if once:
            name = consumer or f"{name}-once-{os.getpid()}"
        worker = KafkaIngestWorker(
            redis, settings.lake_root, kafka, settings.kafka_topic, name=name,
            batch_size=batch_size, max_latency_ms=max_latency_ms, join=not once,
        )  # fmt: skip
        if once:
            results = worker.drain()
            rows: dict[str, int] = {}
            for result in results:
                for table, count in result.rows.items():
                    rows[table] = rows.get(table, 0) + count
            emit({"consumer": name, "bus": "kafka", "batches": len(results),
                  "records": sum(r.records for r in results), "rows": rows,
                  "copies_dropped": sum(r.copies for r in results),
                  "erased_dropped": sum(r.erased for r in results)})  # fmt: skip
            return
        import structlog

        from chatlake.logconfig import configure_logging

        configure_logging(settings.log_level)
        log = structlog.get_logger("chatlake.ingest")
        worker.on_batch = lambda r: log.info(
            "batch", records=r.records, rows=r.rows, copies=r.copies, erased=r.erased,
            seconds=round(r.seconds, 3),
        )  # fmt: skip
        log.info("ingest_started", consumer=name, bus="kafka", topic=settings.kafka_topic)
        worker.run(_until_signalled())
        log.info("ingest_stopped", consumer=name, **worker.totals)
    finally:
        kafka.close()


@app.command()
def relay(
    once: Annotated[bool, typer.Option("--once", help="Relay what is waiting, then exit")] = False,
    tenant: Annotated[
        list[str] | None,
        typer.Option(help="Relay only this tenant's outbox (repeat for a shard of tenants)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Entries per produce batch")] = 2000,
) -> None:
    """Relay the tenants' event outboxes (Redis streams) to Kafka (CHATLAKE_EVENT_BUS=kafka;
    long-running, one active relay per shard, others wait as standbys)."""
    from chatlake.bus import bootstrap_servers, ensure_topic
    from chatlake.embedded import Services
    from chatlake.keyspace import redis_sync_client
    from realtime.relay import OutboxRelay, kafka_producer

    settings = get_settings()
    if settings.event_bus != "kafka":
        raise ChatlakeError("the relay moves the outboxes to Kafka: set CHATLAKE_EVENT_BUS=kafka")
    bootstrap = bootstrap_servers(settings)
    redis = redis_sync_client(Services(settings).endpoints().redis_url)
    topic = ensure_topic(settings)
    producer = kafka_producer(bootstrap)
    worker = OutboxRelay(
        redis, producer, settings.kafka_topic, settings.secret("pseudonym_key"),
        batch_size=batch_size, tenants=frozenset(tenant) if tenant else None,
    )  # fmt: skip
    try:
        if once:
            emit({**topic, "relayed": worker.drain(), **worker.totals})
            return
        import structlog

        from chatlake.logconfig import configure_logging

        configure_logging(settings.log_level)
        log = structlog.get_logger("chatlake.relay")
        log.info("relay_started", **topic, shard=worker.shard)
        worker.run(_until_signalled())
        log.info("relay_stopped", **worker.totals)
    finally:
        producer.close()


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ChatlakeError(f"{option} takes a day like 2026-11-26, not {value!r}") from None


# The options `erase` and `export` share: whom, and for which recorded request.
SubjectUser = Annotated[
    str | None, typer.Option(help="The data subject: user_id as the tenant knows it")
]
RequestId = Annotated[str | None, typer.Option(help="Carry out this recorded request (the API's)")]
Actor = Annotated[str, typer.Option(help="Who asked, for the audit log")]
SealedSubject = Annotated[
    str | None, typer.Option(help="The subject as the API sealed it for --request-id")
]


def _subject(tenant_id: str, user: str | None, sealed: str | None, request_id: str | None) -> str:
    """The data subject: given in the clear (a person at the command line), or sealed by the
    API for its request (so that no command line the system shows holds the id)."""
    if (user is None) == (sealed is None):
        raise ChatlakeError("give the subject with --user (or --sealed-subject with --request-id)")
    if sealed is None:
        return str(user)
    if request_id is None:
        raise ChatlakeError("--sealed-subject needs the --request-id it was sealed for")
    from chatlake.embedded import Services
    from chatlake.jobs import open_subject
    from chatlake.keyspace import redis_sync_client

    redis = redis_sync_client(Services(get_settings()).endpoints().redis_url)
    try:
        return open_subject(redis, tenant_id, request_id, sealed)
    finally:
        redis.close()


@app.command()
def erase(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    user: SubjectUser = None,
    request_id: RequestId = None,
    actor: Actor = "cli",
    sealed_subject: SealedSubject = None,
) -> None:
    """Erase one user from every store, verify, and print the certificate (also stored
    with the request and recorded in the audit log). Waits while another erasure or
    export of the tenant runs (chatlake/jobs.py)."""
    from pipelines.compliance.requests import run_erasure

    tenant_id = _tenant_id(tenant)
    subject = _subject(tenant_id, user, sealed_subject, request_id)
    certificate = run_erasure(get_settings(), tenant_id, subject, actor, request_id)
    if sealed_subject and request_id and certificate["verification"]["passed"]:
        from chatlake.embedded import Services
        from chatlake.jobs import forget_subject_key
        from chatlake.keyspace import redis_sync_client

        redis = redis_sync_client(Services(get_settings()).endpoints().redis_url)
        try:
            forget_subject_key(redis, tenant_id, request_id)  # the sealed id opens no more
        finally:
            redis.close()
    emit(certificate)
    if not certificate["verification"]["passed"]:
        raise typer.Exit(1)


@app.command()
def export(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    user: SubjectUser = None,
    out: Annotated[
        str | None, typer.Option(help="Where to write the bundle (.zip); default: the request's")
    ] = None,
    request_id: RequestId = None,
    actor: Actor = "cli",
    sealed_subject: SealedSubject = None,
) -> None:
    """Everything held about one user, from every store: subject.json plus Parquet files,
    in one zip (GDPR articles 15 and 20), written as it is read. Waits while another
    erasure or export of the tenant runs (chatlake/jobs.py)."""
    from pathlib import Path

    from pipelines.compliance.export import run_export

    tenant_id = _tenant_id(tenant)
    if out is None and request_id is None:
        raise ChatlakeError("give --out FILE for the bundle")
    subject = _subject(tenant_id, user, sealed_subject, request_id)
    result = run_export(get_settings(), tenant_id, subject, actor, request_id,
                        Path(out) if out else None)  # fmt: skip
    emit({"out": result["out"], "bytes": result["bytes"], "sha256": result["sha256"],
          "request_id": result["request_id"]})  # fmt: skip


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's chain")] = None,
) -> None:
    """Recompute the audit log's hash chains; exit 1 if any row was edited or removed.
    Keep the printed heads elsewhere: they anchor the chains."""
    from chatlake.audit import verify
    from chatlake.db import owner_connection
    from chatlake.embedded import Services

    tenant_id = _tenant_id(tenant) if tenant else None
    with owner_connection(Services(get_settings()).endpoints().database_url) as conn:
        report = verify(conn, tenant_id)
    emit(report)
    if not report["ok"]:
        raise typer.Exit(1)


@pipeline_app.command("run")
def pipeline_run(
    from_day: Annotated[
        str | None, typer.Option("--from", help="First day (default: the first with data)")
    ] = None,
    to_day: Annotated[
        str | None, typer.Option("--to", help="Last day (default: the last with data)")
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain/--no-retrain",
            help="Then rebuild the review queues and retrain intent models (needs the stores)",
        ),
    ] = True,
    bill: Annotated[
        bool,
        typer.Option(
            "--bill/--no-bill",
            help="Then bring the window's and the current month's draft invoices up to date "
            "(needs the stores)",
        ),
    ] = True,
) -> None:
    """Materialize silver, the dbt warehouse and their checks in-process, for every day
    with bronze data (or --from/--to), as the sensor-triggered runs would; then the review
    queues and the intent models (trained, gated, promoted or rejected); then the draft
    invoices."""
    from pipelines.run import run_pipeline

    result = run_pipeline(
        get_settings(), _day(from_day, "--from"), _day(to_day, "--to"), retrain=retrain,
        bill=bill,
    )  # fmt: skip
    emit(result)
    if not result["success"]:
        raise typer.Exit(1)


@lake_app.command("maintain")
def lake_maintain(
    retention_hours: Annotated[
        int,
        typer.Option(
            min=0,
            help="Keep files that versions this recent need; below 168 only with no writer running",
        ),
    ] = 168,
) -> None:
    """Compact small files, checkpoint and vacuum every lake table."""
    from lake.maintenance import maintain

    emit({"tables": maintain(get_settings().lake_root, retention_hours)})


@lake_app.command("retention")
def lake_retention(
    today: Annotated[
        str | None, typer.Option(help="Count days back from this day (YYYY-MM-DD); default today")
    ] = None,
) -> None:
    """Apply every tenant's retention now, as the nightly job does: the expired days leave
    the lake (no file or older version keeps them) and the per-person marts."""
    from pipelines.compliance.retention import enforce_retention

    emit(enforce_retention(get_settings(), _day(today, "--today"), actor="cli"))


@services_app.command("start")
def services_start() -> None:
    """Start the embedded stores (idempotent)."""
    from chatlake.embedded import Services

    services = Services(get_settings())
    services.start()
    emit(services.status())


@services_app.command("stop")
def services_stop() -> None:
    """Stop the embedded stores cleanly."""
    from chatlake.embedded import Services

    emit({"stopped": Services(get_settings()).stop()})


@services_app.command("status")
def services_status() -> None:
    """Show whether the embedded stores run, with their ports."""
    from chatlake.embedded import Services

    emit(Services(get_settings()).status())


@app.command()
def migrate() -> None:
    """Apply the PostgreSQL migrations (versioned; running twice is a no-op)."""
    from chatlake.db.migrate import upgrade
    from chatlake.embedded import Services

    emit(upgrade(Services(get_settings()).endpoints().database_url))


@tenants_app.command("create")
def tenants_create(
    name: str,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", min=1, help="Messages per minute")
    ] = None,
    plan: Annotated[
        str | None, typer.Option(help="Billing plan (default: CHATLAKE_DEFAULT_PLAN)")
    ] = None,
    retention_days: Annotated[
        int, typer.Option(min=1, max=36500, help="Days of conversations kept")
    ] = 90,
) -> None:
    """Create a tenant; prints its id and first API key (shown once)."""
    from chatlake.billing import known_plan
    from cli.launcher import run_control

    settings = get_settings()
    plan = known_plan(settings.billing_plans, plan or settings.default_plan)
    if not name.strip() or len(name) > 200:
        raise ChatlakeError("the tenant name must be 1 to 200 characters")
    limit = rate_limit or settings.default_rate_limit

    async def create(control: Any) -> dict[str, Any]:
        tenant, issued = await control.create_tenant(
            name, limit, plan=plan, actor="cli", retention_days=retention_days
        )
        return {
            "tenant_id": tenant.tenant_id,
            "name": tenant.name,
            "api_key": issued.api_key,
            "key_id": issued.key_id,
            "plan": tenant.plan,
            "rate_limit_per_minute": tenant.rate_limit_per_minute,
            "retention_days": tenant.retention_days,
        }

    emit(run_control(settings, create))


@tenants_app.command("update")
def tenants_update(
    tenant: str,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", min=1, help="Messages per minute")
    ] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended")] = None,
    retention_days: Annotated[
        int | None, typer.Option(min=1, max=36500, help="Days of conversations kept")
    ] = None,
    plan: Annotated[str | None, typer.Option(help="Billing plan")] = None,
) -> None:
    """Change a tenant's rate limit, status, retention or plan."""
    from chatlake.billing import known_plan
    from cli.launcher import run_control

    tenant_id = _tenant_id(tenant)
    if status not in (None, "active", "suspended"):
        raise ChatlakeError("--status must be active or suspended")
    if plan is not None:
        known_plan(get_settings().billing_plans, plan)
    if rate_limit is None and status is None and retention_days is None and plan is None:
        raise ChatlakeError(
            "nothing to change: give --rate-limit, --status, --retention-days or --plan"
        )

    async def update(control: Any) -> dict[str, Any]:
        updated = await control.update_tenant(
            tenant_id,
            rate_limit_per_minute=rate_limit,
            status=status,
            retention_days=retention_days,
            plan=plan,
            actor="cli",
        )
        return dict(updated.public())

    emit(run_control(get_settings(), update))


@tenants_app.command("list")
def tenants_list() -> None:
    """All tenants (reads as the schema owner: platform operators only)."""
    from chatlake.db import owner_connection
    from chatlake.embedded import Services

    with owner_connection(Services(get_settings()).endpoints().database_url) as conn:
        rows = conn.execute(
            "select tenant_id, name, plan, rate_limit_per_minute, retention_days, status, "
            "created_at from tenants order by created_at"
        ).fetchall()
    emit({"tenants": rows})


@users_app.command("create")
def users_create(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    email: Annotated[str, typer.Option(help="The user's email (their sign-in name)")],
    role: Annotated[str, typer.Option(help="analyst, or admin (signs in with TOTP too)")] = (
        "analyst"
    ),
) -> None:
    """Create a dashboards user; prints a one-time password and, for an admin, the TOTP
    provisioning URI (shown once: give them to the user)."""
    from chatlake.embedded import Services
    from chatlake.secrets import secret_box
    from chatlake.users import create_user

    settings = get_settings()
    url = Services(settings).endpoints().database_url
    emit(create_user(url, secret_box(settings), _tenant_id(tenant), email, role))


def _month(value: str) -> date:
    """A month to bill: YYYY-MM, from the platform's first (2025-01) to this one."""
    from datetime import UTC, datetime

    from chatlake.billing import parse_month

    month = parse_month(value)
    if not date(2025, 1, 1) <= month <= datetime.now(UTC).date():
        raise ChatlakeError(f"month {value} is outside 2025-01 to this month")
    return month


@billing_app.command("close")
def billing_close(
    month: Annotated[str, typer.Option(help="The month to close, YYYY-MM (it must be over)")],
) -> None:
    """Finalize every tenant's invoice of a month that is over (the draft brought up to
    date from the marts first); final invoices are never rewritten."""
    from pipelines.billing import month_is_over
    from pipelines.run import run_billing

    first = _month(month)
    if not month_is_over(first):
        raise ChatlakeError(f"{month} is not over yet; a month closes after its last day")
    result = run_billing(get_settings(), [first], close=True)
    emit(result)
    if not result["success"]:
        raise typer.Exit(1)


@billing_app.command("recompute")
def billing_recompute(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild/--no-rebuild", help="Rebuild the month's marts from the lake first"
        ),
    ] = True,
) -> None:
    """Recompute a month's invoices (from the lake, through the marts) under the prices
    each was computed with, and say whether each matches the stored one; writes nothing
    but the marts."""
    from chatlake.billing import month_days
    from pipelines.billing import recompute_month
    from pipelines.run import run_pipeline

    settings = get_settings()
    first = _month(month)
    report: dict[str, Any] = {"month": month}
    if rebuild:
        from datetime import UTC, datetime

        last = min(month_days(first)[1], datetime.now(UTC).date())
        run = run_pipeline(settings, first, last)
        report["rebuild"] = {k: run[k] for k in ("success", "run_id", "days", "seconds")}
        if not run["success"]:
            emit(report)
            raise typer.Exit(1)
    report["invoices"] = recompute_month(settings, first)
    report["all_match"] = all(i["matches"] for i in report["invoices"])
    emit(report)
    if not report["all_match"]:
        raise typer.Exit(1)


@billing_app.command("invoices")
def billing_invoices(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: every month)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json, csv or stripe")] = "json",
    out: Annotated[str | None, typer.Option(help="Write to this file instead of stdout")] = None,
) -> None:
    """A tenant's invoices as JSON (exact decimal numbers), CSV (a row per line item) or
    Stripe Invoice objects."""
    from chatlake.billing import load_invoices, render_invoices
    from chatlake.embedded import Services

    if fmt not in ("json", "csv", "stripe"):
        raise ChatlakeError("--format must be json, csv or stripe")
    settings = get_settings()
    first = _month(month) if month else None
    url = Services(settings).endpoints().app_database_url
    invoices = load_invoices(url, _tenant_id(tenant), first)
    text = render_invoices(invoices, fmt)[0].decode()
    if out:
        try:
            with open(out, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise ChatlakeError(f"cannot write {out}: {exc.strerror}") from None
        emit({"invoices": len(invoices), "out": out})
    else:
        typer.echo(text)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    name: Annotated[str, typer.Option(help="A label for the key")] = "default",
) -> None:
    """Issue another API key for a tenant (shown once)."""
    from cli.launcher import run_control

    tenant_id = _tenant_id(tenant)

    async def create(control: Any) -> dict[str, Any]:
        issued = await control.create_api_key(tenant_id, name, actor="cli")
        return {"key_id": issued.key_id, "name": issued.name, "api_key": issued.api_key}

    emit(run_control(get_settings(), create))


@keys_app.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="Tenant id")]) -> None:
    """A tenant's API keys (prefixes only)."""
    from cli.launcher import run_control

    tenant_id = _tenant_id(tenant)

    async def listing(control: Any) -> dict[str, Any]:
        return {"api_keys": await control.list_api_keys(tenant_id)}

    emit(run_control(get_settings(), listing))


@keys_app.command("revoke")
def keys_revoke(key_id: str, tenant: Annotated[str, typer.Option(help="Tenant id")]) -> None:
    """Revoke an API key; it stops working at once."""
    from cli.launcher import run_control

    tenant_id = _tenant_id(tenant)

    async def revoke(control: Any) -> dict[str, Any]:
        await control.revoke_api_key(tenant_id, key_id, actor="cli")
        return {"revoked": key_id}

    emit(run_control(get_settings(), revoke))


@secrets_app.command("rotate")
def secrets_rotate(
    generate: Annotated[
        bool, typer.Option(help="Development: generate the new master key in secrets.json")
    ] = False,
) -> None:
    """Re-wrap every stored secret under the current master key.

    Production: set CHATLAKE_MASTER_KEY to the new key and CHATLAKE_MASTER_KEY_PREVIOUS to
    the old one (on every process), run this, then drop CHATLAKE_MASTER_KEY_PREVIOUS.
    Development: --generate makes the new key and keeps the old one as previous; restart
    running API processes afterwards so they load it."""
    from chatlake.db import owner_connection
    from chatlake.embedded import Services
    from chatlake.secrets import rotate, secret_box
    from chatlake.settings import rotate_dev_master_key

    settings = get_settings()
    if generate:
        if settings.env != "development" or settings.master_key:
            raise ChatlakeError(
                "--generate is for development keys in $CHATLAKE_HOME/secrets.json; "
                "with CHATLAKE_MASTER_KEY set, set the new key there and the old one in "
                "CHATLAKE_MASTER_KEY_PREVIOUS"
            )
        rotate_dev_master_key(settings.home)
    box = secret_box(settings)
    with owner_connection(Services(settings).endpoints().database_url) as conn:
        counts = rotate(conn, box)
    emit({"master_key_id": box.kek_id, **counts})


@bench_app.command("realtime")
def bench_realtime(
    duration: Annotated[float, typer.Option(min=1, help="Seconds per measurement")] = 10.0,
    connections: Annotated[int, typer.Option(min=1, help="Concurrent connections")] = 64,
    conversations: Annotated[int, typer.Option(min=1, help="Distinct conversations")] = 2000,
    workers: Annotated[str, typer.Option(help="Server worker counts to compare, e.g. 1,2")] = "1,2",
    rate: Annotated[
        int | None,
        typer.Option(min=1, help="Fixed rate (msg/s) for the latency run [1000; --chain 200]"),
    ] = None,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
    client: Annotated[
        str, typer.Option(help="Load generator: auto (wrk if installed), wrk or python")
    ] = "auto",
    chain: Annotated[
        bool, typer.Option(help="Measure the reply chain's overhead with a loopback provider")
    ] = False,
    provider_delay_ms: Annotated[
        float, typer.Option(min=0, help="--chain: the loopback provider's answer delay")
    ] = 50.0,
) -> None:
    """POST /v1/messages under load, against two ceilings measured in the same run."""
    from bench.realtime import run, run_chain

    if chain:
        emit(run_chain(get_settings(), duration, rate or 200, provider_delay_ms, out))
        return
    try:
        counts = [int(part) for part in workers.split(",") if part.strip()]
    except ValueError:
        raise ChatlakeError(f"--workers takes counts like 1,2, not {workers!r}") from None
    if not counts or min(counts) < 1:
        raise ChatlakeError("--workers needs at least one count of 1 or more")
    if client not in ("auto", "wrk", "python"):
        raise ChatlakeError("--client is auto, wrk or python")
    emit(
        run(get_settings(), duration, connections, conversations, counts, rate or 1000, out, client)
    )


@bench_app.command("channels")
def bench_channels(
    duration: Annotated[float, typer.Option(min=1, help="Seconds per measurement")] = 10.0,
    rate: Annotated[float, typer.Option(min=1, help="Webhooks per second (latency run)")] = 50.0,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Webhooks in flight (throughput run)")
    ] = 16,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
) -> None:
    """WhatsApp webhook to outbound send against a loopback Cloud API: latency and
    throughput, against the engine path and the send measured alone."""
    from bench.channels import run

    emit(run(get_settings(), duration, rate, concurrency, out))


@bench_app.command("ingest")
def bench_ingest(
    events: Annotated[
        int | None, typer.Option(min=1, help="Events to move (1,000,000; Kafka: 200,000)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Entries per batch")] = 5000,
    bus: Annotated[
        str, typer.Option(help="redis: stream -> Delta; kafka: outbox -> relay -> Kafka -> Delta")
    ] = "redis",
    partitions: Annotated[int, typer.Option(min=1, help="Kafka: the topic's partitions")] = 4,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
) -> None:
    """Event log -> Delta throughput, against ceilings measured in the same run (Redis: a
    bare drain, a single write_deltalake; Kafka: a bare produce, a bare fetch, the same)."""
    if bus == "kafka":
        from bench.ingest_kafka import run as run_kafka

        emit(run_kafka(get_settings(), events or 200_000, batch_size, partitions, out))
        return
    if bus != "redis":
        raise ChatlakeError(f"--bus is redis or kafka, not {bus!r}")
    from bench.ingest import run

    emit(run(get_settings(), events or 1_000_000, batch_size, out))


@bench_app.command("intents")
def bench_intents(
    data: Annotated[
        str | None, typer.Option(help="Data set in CLINC150's JSON layout (default CLINC150)")
    ] = None,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
    oos_train: Annotated[
        bool, typer.Option(help="Teach the data set's oos_train as the out_of_scope intent")
    ] = True,
) -> None:
    """Train and evaluate the served intent classifier: accuracy, OOS recall, speed."""
    from bench.intents import run

    emit(run(data, out, with_oos=oos_train))


@bench_app.command("startup")
def bench_startup(
    runs: Annotated[int, typer.Option(min=1, help="Starts of each server")] = 5,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
) -> None:
    """Start-up time and resident memory of one API process, against a minimal FastAPI app."""
    from bench.startup import run

    emit(run(get_settings(), runs, out))


@bench_app.command("erasure")
def bench_erasure(
    messages: Annotated[int, typer.Option(min=100, help="Messages in the lake")] = 1_000_000,
    tenants: Annotated[int, typer.Option(min=1, help="Tenants they spread over")] = 100,
    days: Annotated[int, typer.Option(min=1, help="Days they spread over")] = 10,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
) -> None:
    """Erase one user from a generated lake: time, and a plain DELETE as the ceiling."""
    from bench.erasure import run

    emit(run(messages, tenants, days, out))


@bench_app.command("pipeline")
def bench_pipeline(
    messages: Annotated[int, typer.Option(min=100, help="Generated messages in all")] = 1_000_000,
    tenants: Annotated[int, typer.Option(min=1, help="Tenants they spread over")] = 100,
    days: Annotated[int, typer.Option(min=1, help="Days they spread over")] = 10,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
) -> None:
    """A full lakehouse materialization and one incremental day, on generated bronze data
    in a temporary home, against a DuckDB scan of the same rows."""
    from bench.pipeline import run

    emit(run(messages, tenants, days, out))


@bench_app.command("chaos")
def bench_chaos(
    quick: Annotated[bool, typer.Option("--quick", help="A short run (~1 min)")] = False,
    faults: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of: api,ingest,redis,postgres,erasure,"
            "retention,pipelines (default: all, in that order)"
        ),
    ] = None,
    keep_home: Annotated[
        bool, typer.Option("--keep-home", help="Keep the temporary CHATLAKE_HOME (logs)")
    ] = False,
    out: Annotated[str | None, typer.Option(help="JSON output file")] = None,
) -> None:
    """Steady traffic while the API, the ingest worker, Redis and PostgreSQL are killed -9,
    an erasure, a retention pass and two pipeline runs go on; then acknowledged messages
    lost or duplicated in the lake, recovery times, cross-tenant leaks, forged webhooks."""
    from bench.chaos import run

    chosen = [f.strip() for f in faults.split(",") if f.strip()] if faults else None
    emit(run(quick, out, chosen, keep_home))


def main() -> None:
    """The console script. Once a command is done, the process ends at once (os._exit)
    with the command's code: pyarrow's and deltalake's threads may otherwise abort the
    interpreter's shutdown after the work succeeded (`terminate called without an active
    exception`, exit 134: apache/arrow#34314), so nothing of theirs runs after this."""
    code = _run()
    logging.shutdown()  # what atexit would have flushed
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _run() -> int:
    """The command's exit code; a user's mistake is one line on stderr, code 1."""
    import psycopg
    import pydantic
    import redis

    try:
        app()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        typer.echo(str(exc.code), err=True)
        return 1
    except ChatlakeError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"CHATLAKE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        typer.echo(f"error: invalid configuration: {problems}", err=True)
        return 1
    except (psycopg.OperationalError, redis.ConnectionError) as exc:
        typer.echo(f"error: cannot reach a store: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
