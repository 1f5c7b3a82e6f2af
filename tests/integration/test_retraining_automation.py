"""The retraining loop's automation: the `labels_arrived` sensor asks for a run once
enough new labels arrived, and the nightly schedule is part of the code location."""

from __future__ import annotations

import dagster as dg
import psycopg

from pipelines.definitions import defs
from pipelines.defs.nlu.retraining import labels_arrived
from pipelines.defs.resources import PostgresResource
from tests.utils.factories import create_tenant


def test_the_code_location_schedules_retraining_nightly():
    definitions = defs()
    assert definitions.resolve_job_def("intent_retraining") is not None
    schedule = definitions.resolve_schedule_def("intent_retraining_schedule")
    assert schedule.cron_schedule == "0 4 * * *"
    assert definitions.resolve_sensor_def("labels_arrived") is not None


def test_the_sensor_starts_a_run_once_enough_labels_arrived(
    client, admin_headers, settings, endpoints, monkeypatch
):
    tenant = create_tenant(client, admin_headers)
    postgres = PostgresResource(home=str(settings.home))
    monkeypatch.setenv("CHATLAKE_NLU_RETRAIN_MIN_LABELS", "3")
    with psycopg.connect(endpoints.database_url) as owner:
        (start,) = owner.execute("select now()::text").fetchone()

    def add_labels(n: int, offset: int) -> None:
        with psycopg.connect(endpoints.database_url) as owner:
            for i in range(offset, offset + n):
                owner.execute(
                    """insert into nlu_labels (tenant_id, event_id, intent, user_key,
                                               text_digest, labelled_by)
                       values (%s, %s, 'greet', 'someone', %s, 'test')""",
                    (tenant.tenant_id, f"ev-{i}", f"digest-{i}"),
                )

    def look(cursor: str) -> dg.SensorResult | dg.SkipReason:
        with dg.build_sensor_context(cursor=cursor, resources={"postgres": postgres}) as context:
            return labels_arrived(context)

    add_labels(2, 0)
    waiting = look(start)
    assert isinstance(waiting, dg.SkipReason) and "2 new labels" in waiting.skip_message
    add_labels(1, 2)
    result = look(start)
    assert len(result.run_requests) == 1
    again = look(result.cursor)
    assert isinstance(again, dg.SkipReason)  # nothing new since the run it asked for
