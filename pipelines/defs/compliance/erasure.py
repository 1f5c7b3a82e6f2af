"""The erasure job that an erasure request launches (chatlake/jobs.py, by its name): one op
that erases, verifies and certifies (pipelines/compliance/requests.py), then destroys the
key that opens the request's sealed subject. Visible in the Dagster UI with its outcome; a
failed run is re-executed from the UI (the steps are idempotent and resume to the same
end)."""

import dagster as dg
from dagster import OpExecutionContext

from pipelines.common import WAREHOUSE_WRITER
from pipelines.compliance.requests import ERASURE_JOB, forget_subject_key, open_subject, run_erasure
from pipelines.defs.resources import RedisResource


class ErasureConfig(dg.Config):
    request_id: str
    tenant_id: str
    actor: str
    sealed_subject: str  # the user id, sealed under a key that lives in Redis only


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=10))
def erase_subject_everywhere(
    context: OpExecutionContext, config: ErasureConfig, redis: RedisResource
) -> dg.Output[None]:
    # Not with the lake or warehouse resource, which hold the pipeline lock for the whole
    # step: this step first waits for its tenant's compliance slot, and a `chatlake erase`
    # that holds that slot waits for the pipeline lock to rebuild the marts (a deadlock).
    # The erasure takes the pipeline lock itself, only around its warehouse writes.
    settings = redis.settings()
    with redis.client() as client:
        user_id = open_subject(client, config.tenant_id, config.request_id, config.sealed_subject)
        certificate = run_erasure(
            settings, config.tenant_id, user_id, config.actor, config.request_id
        )
        verification = certificate["verification"]
        if not verification["passed"]:
            raise dg.Failure(
                description="verification found traces of the subject",
                metadata={"found": verification["found"]},
            )
        forget_subject_key(client, config.tenant_id, config.request_id)
    context.log.info(f"erasure {config.request_id} certified")
    return dg.Output(
        None,
        metadata={
            "request_id": config.request_id,
            "stores": sorted(certificate["stores"]),
            "verification": "passed",
        },
    )


@dg.job(
    name=ERASURE_JOB,
    description="Erase one data subject from every store, verify, certify (GDPR art. 17).",
    tags={"chatlake/kind": "compliance", **WAREHOUSE_WRITER},  # it rebuilds the marts
)
def erase_subject() -> None:
    erase_subject_everywhere()
