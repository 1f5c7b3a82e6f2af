"""The sealed subject an erasure job's run configuration carries: opened with the
request's key while it lives, unreadable once the key is destroyed."""

from __future__ import annotations

import pytest

from chatlake.errors import ChatlakeError
from chatlake.keyspace import redis_sync_client
from chatlake.subject_keys import open_texts, prune_subject_keys, seal_texts
from pipelines.compliance.requests import forget_subject_key, open_subject, seal_subject


@pytest.fixture
def redis(endpoints):
    client = redis_sync_client(endpoints.redis_url)
    yield client
    client.close()


def test_a_sealed_subject_opens_until_its_key_is_destroyed(redis):
    sealed = seal_subject(redis, "t-seal", "req-1", "alice@example.com")
    assert "alice" not in sealed
    assert open_subject(redis, "t-seal", "req-1", sealed) == "alice@example.com"
    other = seal_subject(redis, "t-seal", "req-2", "bob")
    with pytest.raises(ChatlakeError, match="not its own"):
        open_subject(redis, "t-seal", "req-2", sealed)  # another request's key
    forget_subject_key(redis, "t-seal", "req-1")
    with pytest.raises(ChatlakeError, match="is gone"):
        open_subject(redis, "t-seal", "req-1", sealed)
    assert open_subject(redis, "t-seal", "req-2", other) == "bob"


def test_subject_keys_of_texts_no_longer_kept_are_destroyed(redis):
    sealed = seal_texts(redis, "t-prune", [("kept", "hello"), ("gone", "bye")])
    assert open_texts(redis, "t-prune", [("kept", sealed[0]), ("gone", sealed[1])]) == [
        "hello",
        "bye",
    ]
    assert prune_subject_keys(redis, "t-prune", {"kept"}) == 1
    assert open_texts(redis, "t-prune", [("kept", sealed[0]), ("gone", sealed[1])]) == [
        "hello",
        None,
    ]
