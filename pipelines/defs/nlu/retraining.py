"""The intent-retraining loop in Dagster (pipelines/nlu.py): the review queue built from
silver, and each tenant's candidate model, gated and promoted or rejected; a nightly
schedule and a sensor that starts a run when enough new labels arrive."""

from collections.abc import Iterator

import dagster as dg
from dagster import AssetExecutionContext, SensorEvaluationContext

from pipelines.common import WAREHOUSE_WRITER
from pipelines.defs.resources import LakeResource, PostgresResource, RedisResource

GATE = "promotion_gate"


@dg.asset(
    key="nlu_review_queue",
    group_name="nlu",
    deps=[dg.AssetKey(["silver", "turns"]), dg.AssetKey(["silver", "conversation_events"])],
    description="Each tenant's recent low-confidence, fallback and handoff utterances, "
    "de-duplicated, PII-masked and ranked, in PostgreSQL for GET /v1/nlu/review.",
)
def nlu_review_queue(
    context: AssetExecutionContext, lake: LakeResource, redis: RedisResource
) -> dg.MaterializeResult:
    from pipelines.nlu import build_review_queue, tenants_with_silver  # loads polars, the lake

    settings = lake.settings()
    built: dict[str, dict[str, int]] = {}
    failed: dict[str, str] = {}
    with redis.client() as client:
        for tenant in tenants_with_silver(settings):
            try:
                built[tenant] = build_review_queue(settings, client, tenant)
            except Exception as exc:  # one tenant's failure must not stop the others
                failed[tenant] = f"{type(exc).__name__}: {exc}"
                context.log.error(f"review queue of {tenant}: {failed[tenant]}")
    context.log.info(f"review queues: {built}")
    return dg.MaterializeResult(
        metadata={
            "tenants": len(built),
            "items": sum(b["items"] for b in built.values()),
            "utterances_flagged": sum(b["utterances"] for b in built.values()),
            "failed": failed,
        }
    )


@dg.asset(
    key="intent_models",
    group_name="nlu",
    deps=["nlu_review_queue"],
    check_specs=[dg.AssetCheckSpec(GATE, asset="intent_models")],
    description="Per tenant: a candidate trained on intent examples plus human labels, "
    "evaluated against the live model and promoted only if it does not regress.",
)
def intent_models(
    context: AssetExecutionContext, lake: LakeResource, redis: RedisResource
) -> Iterator[dg.Output[None] | dg.AssetCheckResult]:
    from pipelines.nlu import retrain_tenant, tenants_to_retrain

    settings = lake.settings()
    outcomes = []
    with redis.client() as client:
        for tenant in tenants_to_retrain(settings):
            try:
                outcomes.append(retrain_tenant(settings, client, tenant))
            except Exception as exc:  # one tenant's failure must not stop the others
                outcomes.append({"tenant_id": tenant, "outcome": "failed",
                                 "reason": f"{type(exc).__name__}: {exc}"})  # fmt: skip
    for outcome in outcomes:
        context.log.info(str(outcome))
    rejected = {o["tenant_id"]: o["reasons"] for o in outcomes if o["outcome"] == "rejected"}
    failed = {o["tenant_id"]: o["reason"] for o in outcomes if o["outcome"] == "failed"}
    yield dg.Output(
        None,
        metadata={
            "promoted": [o["tenant_id"] for o in outcomes if o["outcome"] == "promoted"],
            "rejected": rejected,
            "failed": failed,
            "skipped": len([o for o in outcomes if o["outcome"] == "skipped"]),
        },
    )
    yield dg.AssetCheckResult(
        check_name=GATE,
        passed=not rejected and not failed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejected": rejected, "failed": failed},
        description="Candidates the gate rejected (the live model stays), with the reasons.",
    )


intent_retraining = dg.define_asset_job(
    "intent_retraining",
    selection=dg.AssetSelection.groups("nlu"),
    description="Rebuild the review queues, then train, gate and promote intent models.",
    tags=WAREHOUSE_WRITER,  # never beside an erasure run (they share this limit of one)
)

retraining_schedule = dg.ScheduleDefinition(
    job=intent_retraining, cron_schedule="0 4 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)  # fmt: skip


@dg.sensor(
    job=intent_retraining,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def labels_arrived(
    context: SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    """A retraining run once `CHATLAKE_NLU_RETRAIN_MIN_LABELS` new labels have arrived."""
    settings = postgres.settings()
    since = context.cursor or "1970-01-01T00:00:00+00:00"
    with postgres.owner_connection() as conn:
        row = conn.execute(
            """select count(*) as n, max(created_at)::text as newest from nlu_labels
               where created_at > %s::timestamptz""",
            (since,),
        ).fetchone()
    assert row is not None
    if row["n"] < settings.nlu_retrain_min_labels:
        return dg.SkipReason(
            f"{row['n']} new labels (a run needs {settings.nlu_retrain_min_labels})"
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"labels@{row['newest']}")], cursor=row["newest"]
    )
