"""Tenant users of the dashboards: created by a platform operator (`chatlake users create`),
signing in with a password (argon2id) and, for admins, a TOTP code (RFC 6238, pyotp).

The printed password is shown once and stored only as its argon2 hash; an admin's TOTP
secret is sealed under the master key (like provider credentials). Failed sign-ins are
counted per account in Redis: after `MAX_FAILURES` within `LOCKOUT_SECONDS` the account
refuses every attempt, right or wrong, until the window passes.

The dashboards read as their own role, `chatlake_dashboards` (migration 0015): under
row-level security, without access to password hashes or secrets; the sign-in lookup (the
tenant is not known before it) goes through one SECURITY DEFINER function that answers
for one exact email. A wrong password and a right one without an admin's code get the
same answer (no password oracle), and a suspended tenant's users cannot sign in; an open
session is re-checked with `still_signed_in`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import psycopg
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg.rows import DictRow, dict_row
from redis import Redis

from chatlake.db import TENANT_SETTING, owner_connection
from chatlake.errors import ChatlakeError
from chatlake.keyspace import login_failures, totp_last_step
from chatlake.secrets import SecretBox, SecretError

log = logging.getLogger(__name__)
ROLES = ("analyst", "admin")
DASHBOARDS_ROLE = "chatlake_dashboards"
REFUSED = "wrong email, password or code"
MAX_FAILURES = 5
LOCKOUT_SECONDS = 15 * 60
ISSUER = "chatlake"
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_HASHER = PasswordHasher()  # argon2id, the library's (RFC 9106) defaults
# verified when the email is unknown, so that an unknown account costs as long as a known one
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class UserError(ChatlakeError):
    pass


class SignInRefused(ChatlakeError):
    """Wrong email, password or code, or a locked account: one message for all."""


@dataclass(frozen=True)
class SignedIn:
    user_id: str
    tenant_id: str
    email: str
    role: str


@contextmanager
def dashboards_connection(
    database_url: str, tenant_id: str | None = None
) -> Iterator[psycopg.Connection[DictRow]]:
    """One transaction as the dashboards' role (a URL of another role, such as a
    single-URL deployment's, drops to it), row-level security showing `tenant_id`'s rows
    (none when no tenant is named)."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        if conn.info.user != DASHBOARDS_ROLE:
            conn.execute(f"set role {DASHBOARDS_ROLE}")
        with conn.transaction():
            if tenant_id is not None:
                conn.execute("select set_config(%s, %s, true)", (TENANT_SETTING, tenant_id))
            yield conn


def _context(user_id: str) -> str:
    return f"users:{user_id}:totp"


def email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def create_user(
    database_url: str, box: SecretBox, tenant_id: str, email: str, role: str
) -> dict[str, Any]:
    """A new user; returns the one-time password and, for admins, the TOTP provisioning
    URI (both shown once)."""
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise UserError(f"not an email address: {email!r}")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    password = secrets.token_urlsafe(12)
    user_id = str(uuid4())
    totp_secret = pyotp.random_base32() if role == "admin" else None
    sealed = None if totp_secret is None else box.seal(totp_secret, _context(user_id))
    with owner_connection(database_url) as conn:
        known = conn.execute("select 1 from tenants where tenant_id = %s", (tenant_id,)).fetchone()
        if known is None:
            raise UserError(f"no tenant {tenant_id}")
        if conn.execute("select 1 from users where email = %s", (email,)).fetchone():
            raise UserError(f"a user with email {email} exists")
        conn.execute(
            """insert into users (user_id, tenant_id, email, role, password_hash, totp_sealed)
               values (%s, %s, %s, %s, %s, %s)""",
            (user_id, tenant_id, email, role, _HASHER.hash(password), sealed),
        )
        conn.execute(
            """insert into audit_log (tenant_id, actor, action, target, detail)
               values (%s, 'cli', 'user.created', %s, jsonb_build_object('role', %s::text))""",
            (tenant_id, user_id, role),
        )
    created: dict[str, Any] = {"user_id": user_id, "tenant_id": tenant_id,
                               "email": email, "role": role, "password": password}  # fmt: skip
    if totp_secret is not None:
        totp = pyotp.TOTP(totp_secret)
        created["totp_uri"] = totp.provisioning_uri(name=email, issuer_name=ISSUER)
    return created


# the step is taken only if it is later than the last one taken (atomically: two sign-ins
# racing with one code cannot both pass)
_TAKE_STEP = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def _fresh_code(redis: Redis, user_id: str, totp: pyotp.TOTP, code: str) -> bool:
    """The code is one of the current time step's or a neighbour's (clock skew), and no
    sign-in took it (or a later one) before: a code seen over a shoulder or a network
    cannot be used again."""
    now = time.time()
    for offset in (-1, 0, 1):
        if hmac.compare_digest(totp.at(now, counter_offset=offset), code):
            step = int(now // totp.interval) + offset
            return bool(redis.eval(_TAKE_STEP, 1, totp_last_step(user_id), step, 4 * totp.interval))
    return False


def sign_in(
    database_url: str,
    redis: Redis,
    box: SecretBox,
    email: str,
    password: str,
    totp_code: str = "",
) -> SignedIn:
    """The user, if the password (and an admin's current TOTP code) is right, the account
    is not locked and its tenant is not suspended; `SignInRefused` otherwise, saying which
    only for a lockout or (once everything else was right) a suspended tenant. A missing
    code gets the answer a wrong password gets, so the answer never confirms a password.
    `database_url`: the dashboards' role's (any role that may `set role` to it)."""
    email = email.strip().lower()
    key = login_failures(email_digest(email))
    # the attempt counts before it is checked (so parallel guesses cannot outrun the
    # limit); the window starts at the first failure; a success clears it
    with redis.pipeline() as pipe:
        pipe.set(key, 0, ex=LOCKOUT_SECONDS, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, attempts, ttl = pipe.execute()
    if int(ttl) < 0:  # a counter without its window (should not be): give it one
        redis.expire(key, LOCKOUT_SECONDS)
    if int(attempts) > MAX_FAILURES:
        raise SignInRefused(
            f"too many failed sign-ins; try again in {(max(int(ttl), 1) + 59) // 60} min"
        )
    with dashboards_connection(database_url) as conn:
        row = conn.execute(
            """select user_id::text as user_id, tenant_id::text as tenant_id, email, role,
                      password_hash, totp_sealed, tenant_status
               from dashboard_credentials(%s)""",
            (email,),
        ).fetchone()
    try:
        _HASHER.verify(row["password_hash"] if row else _DUMMY_HASH, password)
        ok = row is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if ok and row is not None and row["role"] == "admin":
        try:
            secret = box.open(row["totp_sealed"], _context(row["user_id"]))
        except SecretError:
            log.error("the TOTP secret of %s does not open under the master keys", row["user_id"])
            raise SignInRefused(REFUSED) from None
        ok = _fresh_code(redis, row["user_id"], pyotp.TOTP(secret), totp_code.strip())
    if not ok or row is None:
        raise SignInRefused(REFUSED)
    if row["tenant_status"] != "active":
        raise SignInRefused("this account's tenant is suspended; ask your platform operator")
    redis.delete(key)
    with dashboards_connection(database_url) as conn:
        conn.execute("select dashboard_signed_in(%s)", (row["user_id"],))
    return SignedIn(row["user_id"], row["tenant_id"], row["email"], row["role"])


def still_signed_in(database_url: str, user: SignedIn) -> SignedIn | None:
    """The session's user as the database has it now (its role may have changed), or None
    when the account is gone or its tenant suspended: read as the dashboards' role, under
    the tenant's row-level security."""
    with dashboards_connection(database_url, user.tenant_id) as conn:
        row = conn.execute(
            """select u.email, u.role, t.status from users u
               join tenants t on t.tenant_id = u.tenant_id where u.user_id = %s""",
            (user.user_id,),
        ).fetchone()
    if row is None or row["status"] != "active":
        return None
    return SignedIn(user.user_id, user.tenant_id, row["email"], row["role"])
