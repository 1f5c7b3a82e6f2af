"""bronze (written by the ingest worker) -> silver (cleaned, PII-masked, pseudonymized)."""

from collections.abc import Iterator

import dagster as dg
from dagster import AssetExecutionContext

from lake.silver import build_silver
from pipelines.common import DAILY, window
from pipelines.defs.resources import LakeResource

BRONZE_MESSAGES = dg.AssetSpec(
    ["bronze", "messages"],
    group_name="bronze",
    description="One row per message in or out, appended exactly once by `chatlake ingest`.",
    kinds={"delta"},
)
BRONZE_CONVERSATION_EVENTS = dg.AssetSpec(
    ["bronze", "conversation_events"],
    group_name="bronze",
    description="Conversation starts, handoffs and other conversation events.",
    kinds={"delta"},
)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ["silver", "turns"], deps=[BRONZE_MESSAGES], group_name="silver", kinds={"delta"},
            description="Messages with text normalised and PII masked, users pseudonymized.",
        ),
        dg.AssetSpec(
            ["silver", "conversation_events"], deps=[BRONZE_CONVERSATION_EVENTS],
            group_name="silver", kinds={"delta"},
            description="Conversation events with users pseudonymized.",
        ),
    ],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
)  # fmt: skip
def silver(context: AssetExecutionContext, lake: LakeResource) -> Iterator[dg.MaterializeResult]:
    first, last = window(context)
    written = build_silver(lake.root, first, last, lake.pseudonym_key())
    for name, rows in written.items():
        yield dg.MaterializeResult(
            asset_key=dg.AssetKey(name.split("/")),
            metadata={"rows": rows, "first_day": first.isoformat(), "last_day": last.isoformat()},
        )
