"""The event bus on Kafka: the topic, and the record format the relay writes and the lake's
Kafka ingest reads (the two meet here, in the base, as the API and the lake meet in the
event contract).

With `CHATLAKE_EVENT_BUS=kafka` the API is unchanged: its `record` script still appends
each event to the tenant's Redis stream in the same atomic step as the conversation's
state, and that stream is now a transactional outbox. The relay (`chatlake relay`,
realtime/relay.py) moves the outbox to one Kafka topic; the lake's Kafka ingest
(lake/kafka_ingest.py) moves the topic into Delta, exactly once.

A record:
- key: the conversation id (one conversation, one partition: its order is kept);
- value: the event's JSON, sealed (Fernet) under the subject's own key
  (chatlake/subject_keys.py), so that erasure, which destroys that key, leaves every copy
  the topic still retains unreadable (a Kafka log cannot be edited record by record);
- headers: `tenant`, `subject` (the pseudonym whose key seals the value), `outbox` (the
  Redis stream) and `entry` (the entry id there): the relay re-sends what it sent before a
  crash, and the ingest drops such a copy by its (partition, outbox, entry).

This module imports kafka-python only inside its functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatlake.errors import ConfigError
from chatlake.settings import Settings

FORMAT_VERSION = b"1"


def bootstrap_servers(settings: Settings) -> list[str]:
    """`CHATLAKE_KAFKA_BOOTSTRAP` as a list (a clear error when Kafka is chosen without it)."""
    servers = [s.strip() for s in (settings.kafka_bootstrap or "").split(",") if s.strip()]
    if not servers:
        raise ConfigError(
            "CHATLAKE_EVENT_BUS=kafka needs CHATLAKE_KAFKA_BOOTSTRAP=host:port[,host:port...]"
        )
    return servers


def entry_version(entry_id: str) -> int:
    """A Redis stream entry id (`<ms>-<seq>`) as one increasing integer (a Delta app
    transaction's version): ms * 10^6 + seq."""
    ms, _, seq = entry_id.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


@dataclass(frozen=True)
class Envelope:
    """What the headers of a record say."""

    tenant_id: str
    subject: str  # the pseudonym whose key seals the value ("" if not sealed)
    outbox: str
    entry: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("v", FORMAT_VERSION),
            ("tenant", self.tenant_id.encode()),
            ("subject", self.subject.encode()),
            ("outbox", self.outbox.encode()),
            ("entry", self.entry.encode()),
        ]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | None) -> Envelope | None:
        """None for a record that is not chatlake's (or of a format this build cannot
        read): the ingest counts and skips it."""
        found = dict(headers or [])
        if found.get("v") != FORMAT_VERSION:
            return None
        try:
            return cls(
                tenant_id=found["tenant"].decode(),
                subject=found["subject"].decode(),
                outbox=found["outbox"].decode(),
                entry=found["entry"].decode(),
            )
        except (KeyError, UnicodeDecodeError):
            return None


def ensure_topic(settings: Settings) -> dict[str, Any]:
    """Create the events topic (`CHATLAKE_KAFKA_TOPIC`, `CHATLAKE_KAFKA_PARTITIONS`
    partitions) unless it exists; its partition count either way."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings), client_id="chatlake-admin"
    )
    try:
        if settings.kafka_topic not in admin.list_topics():
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            settings.kafka_topic,
                            num_partitions=settings.kafka_partitions,
                            replication_factor=settings.kafka_replication,
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another process made it meanwhile
        described = admin.describe_topics([settings.kafka_topic])
        partitions = len(described[0]["partitions"]) if described else 0
    finally:
        admin.close()
    return {"topic": settings.kafka_topic, "partitions": partitions}


def topic_partitions(consumer: Any, topic: str, timeout_s: float = 30.0) -> list[int]:
    """The topic's partition ids as the cluster's metadata says (waits for it to load)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            raise ConfigError(f"Kafka topic {topic!r} has no partitions (does it exist?)")
        time.sleep(0.2)
