from chatlake.db.migrate import current_revision, head_revision, upgrade


def test_migrations_are_at_head_and_idempotent(endpoints):
    assert current_revision(endpoints.database_url) == head_revision()
    again = upgrade(endpoints.database_url)
    assert again == {"from": head_revision(), "to": head_revision()}
