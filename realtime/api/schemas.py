"""Request and response models: the OpenAPI document is generated from these."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nlu.entities import compile_tenant_pattern
from realtime.channels.model import MODEL_TYPES

CHANNELS = ("web", "api", "whatsapp", "messenger", "slack", "teams", "twilio", "twilio-voice")
# the channels' message model, and what the API took before it
MESSAGE_TYPES = (*MODEL_TYPES, "button", "card", "event")
Channel = Literal[CHANNELS]  # type: ignore[valid-type]
MessageType = Literal[MESSAGE_TYPES]  # type: ignore[valid-type]
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class StrictModel(BaseModel):
    """Request bodies: unknown fields are errors, and no string carries a NUL character
    (PostgreSQL text cannot hold one, and no chat message needs one) or a lone surrogate
    (JSON lets one through as an escape; it is not text and no store can encode it)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("must not contain NUL characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text (no lone surrogates)") from None
        return value


class MessageIn(StrictModel):
    user_id: str = Field(
        min_length=1, max_length=256, description="The end user, as the tenant knows them"
    )
    text: str = Field(default="", max_length=8192)
    conversation_id: str | None = Field(default=None, pattern=CONVERSATION_ID_PATTERN)
    channel: Channel = "api"
    type: MessageType = "text"
    payload: dict[str, Any] | None = None
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")

    @field_validator("payload", mode="after")
    @classmethod
    def _encodable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # The payload is stored as JSON; orjson (and the lake) take 64-bit integers at most.
        if value is not None:
            try:
                orjson.dumps(value)
            except TypeError as exc:
                raise ValueError(f"cannot be stored: {exc}") from None
        return value


class Intent(BaseModel):
    name: str
    confidence: float


class ReplyOut(BaseModel):
    type: str
    text: str = Field(description="The reply as text (a rich reply's numbered-text form)")
    message_id: str
    payload: dict[str, Any] | None = Field(
        default=None, description="A rich reply's fields (buttons, cards, media URL, ...)"
    )


class AnsweredBy(BaseModel):
    tier: Literal["flow", "llm", "knowledge", "rules"]
    provider: str | None = None
    model: str | None = None


class MessageOut(BaseModel):
    conversation_id: str
    message_id: str
    replies: list[ReplyOut]
    intent: Intent | None
    handoff: bool
    answered_by: AnsweredBy


class MessageRecord(BaseModel):
    message_id: str
    direction: Literal["in", "out"]
    type: str
    text: str
    payload: dict[str, Any] | None = None
    intent: str | None = None
    confidence: float | None = None
    created_at: str


class ConversationOut(BaseModel):
    conversation_id: str
    user_id: str
    channel: str
    created_at: str
    updated_at: str
    message_count: int = Field(description="All messages, including those past the window")
    summary: dict[str, Any] | None = Field(
        default=None, description="The whole conversation, compressed (bounded in size)"
    )
    messages: list[MessageRecord] = Field(
        description="The most recent messages (at most 50), oldest first; the lake has them all"
    )


class ConversationSummary(BaseModel):
    conversation_id: str
    user_id: str
    channel: str
    created_at: str
    updated_at: str
    message_count: int


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class TenantIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=10_000_000)
    plan: str | None = Field(
        default=None, min_length=1, max_length=50,
        description="a plan of CHATLAKE_BILLING_PLANS (default CHATLAKE_DEFAULT_PLAN)",
    )  # fmt: skip
    retention_days: int = Field(
        default=90, ge=1, le=36500, description="days of conversations the platform keeps"
    )

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class TenantCreated(BaseModel):
    tenant_id: str
    name: str
    api_key: str
    key_id: str
    plan: str
    rate_limit_per_minute: int
    retention_days: int


class TenantPatch(StrictModel):
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=10_000_000)
    status: Literal["active", "suspended"] | None = None
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    plan: str | None = Field(default=None, min_length=1, max_length=50)


class OwnTenantPatch(StrictModel):
    """What a tenant may change about itself."""

    retention_days: int = Field(ge=1, le=36500, description="days of conversations kept")


class TenantOut(BaseModel):
    tenant_id: str
    name: str
    plan: str
    rate_limit_per_minute: int
    status: str
    created_at: str
    retention_days: int


class ApiKeyIn(StrictModel):
    name: str = Field(default="default", min_length=1, max_length=100)


class ApiKeyCreated(BaseModel):
    key_id: str
    name: str
    api_key: str
    display_prefix: str


class ApiKeyOut(BaseModel):
    key_id: str
    name: str
    display_prefix: str
    created_at: str
    revoked_at: str | None


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyOut]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: these statuses answer with the error contract."""
    return {code: {"model": ErrorOut} for code in codes}


INTENT_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
LANGUAGE_PATTERN = r"^[a-z]{2}$"


class IntentIn(StrictModel):
    examples: list[str] = Field(min_length=1, max_length=5000)
    language: str = Field(default="en", pattern=LANGUAGE_PATTERN)

    @field_validator("examples", mode="after")
    @classmethod
    def _examples(cls, value: list[str]) -> list[str]:
        cleaned = [example.strip() for example in value]
        if any(not example or len(example) > 1000 for example in cleaned):
            raise ValueError("every example must be 1 to 1000 characters")
        if any("\x00" in example for example in cleaned):
            raise ValueError("must not contain NUL characters")
        return cleaned


class IntentOut(BaseModel):
    name: str
    language: str
    examples: list[str]
    updated_at: str | None = None


class IntentList(BaseModel):
    intents: list[IntentOut]


class ParseIn(StrictModel):
    text: str = Field(max_length=8192)
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)


class Entity(BaseModel):
    entity: str
    value: Any
    text: str
    start: int
    end: int


class ParseOut(BaseModel):
    intent: Intent | None
    ranking: list[Intent]
    entities: list[Entity]
    language: str
    model_version: int | None


class ModelOut(BaseModel):
    model_version: int
    active: bool
    status: Literal["promoted", "rejected", "retired"] = Field(
        default="promoted",
        description="what the promotion gate decided (API training: promoted); retired: "
        "trained on an erased subject's label, its files deleted",
    )
    gate: dict[str, Any] | None = Field(
        default=None, description="the gate's tolerances, decision and reasons"
    )
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    created_at: str | None = None


class ReviewItem(BaseModel):
    event_id: str
    text: str = Field(description="the utterance, PII-masked")
    intent: str | None = Field(description="what the model guessed (null: out of scope)")
    confidence: float | None
    language: str | None = None
    occurrences: int = Field(description="how often this utterance (normalised) occurred")
    reasons: list[str] = Field(description="low_confidence, fallback and/or handoff")
    last_seen: datetime


class ReviewList(BaseModel):
    items: list[ReviewItem]


class LabelIn(StrictModel):
    event_id: str = Field(min_length=1, max_length=200)
    intent: str = Field(
        pattern=INTENT_NAME_PATTERN, description="an existing intent, a new one, or out_of_scope"
    )
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)


class LabelOut(BaseModel):
    event_id: str
    intent: str
    language: str | None
    new_intent: bool = Field(description="the label names an intent the tenant has no examples of")


class ModelList(BaseModel):
    models: list[ModelOut]


class TrainOut(BaseModel):
    model_version: int
    active: bool
    train_seconds: float
    intents: int
    examples: int
    languages: list[str]
    thresholds: dict[str, float]
    lineage: dict[str, Any]


class FlowPublished(BaseModel):
    version: int


class FlowVersion(BaseModel):
    version: int
    live: bool
    created_by: str
    created_at: str


class FlowVersions(BaseModel):
    live: int | None
    experiment: list[dict[str, Any]] | None
    versions: list[FlowVersion]


class RollbackIn(StrictModel):
    version: int = Field(ge=1)


class Variant(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,50}$")
    version: int = Field(ge=1)
    weight: int = Field(ge=1, le=100)


class ExperimentIn(StrictModel):
    variants: list[Variant] = Field(min_length=2, max_length=10)

    @field_validator("variants", mode="after")
    @classmethod
    def _split(cls, value: list[Variant]) -> list[Variant]:
        if sum(v.weight for v in value) != 100:
            raise ValueError("the weights must add up to 100")
        if len({v.name for v in value}) != len(value):
            raise ValueError("variant names must differ")
        return value


class EntityIn(StrictModel):
    """Exactly one of `pattern` (a regular expression) or `lookup` (value -> synonyms)."""

    pattern: str | None = Field(default=None, min_length=1, max_length=500)
    lookup: dict[str, list[str]] | None = Field(default=None, min_length=1, max_length=5000)

    @field_validator("pattern", mode="after")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_tenant_pattern(value)  # RE2: linear time, so no pattern can stall a reply
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> EntityIn:
        if (self.pattern is None) == (self.lookup is None):
            raise ValueError("give exactly one of pattern or lookup")
        return self


class EntityOut(BaseModel):
    name: str
    pattern: str | None
    lookup: dict[str, list[str]] | None


class EntityList(BaseModel):
    entities: list[EntityOut]


class DocumentIn(StrictModel):
    title: str = Field(min_length=1, max_length=500)
    text: str = Field(min_length=1, max_length=1_000_000)


class DocumentCreated(BaseModel):
    document_id: str
    title: str
    chunks: int


class DocumentOut(BaseModel):
    document_id: str
    title: str
    chunks: int
    created_at: str


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class SearchResult(BaseModel):
    document_id: str
    title: str
    text: str
    score: float


class SearchResults(BaseModel):
    results: list[SearchResult]


class ChainTierIn(StrictModel):
    provider: Literal[
        "openai", "anthropic", "gemini", "azure_openai", "huggingface", "openai_compatible"
    ]
    model: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x20\x7f]+$")
    base_url: str | None = Field(default=None, pattern=r"^https?://", max_length=500)
    api_key: str | None = Field(default=None, min_length=1, max_length=4000)
    timeout_s: float | None = Field(default=None, gt=0, le=120)
    api_version: str | None = Field(
        default=None, pattern=r"^[0-9A-Za-z.-]{1,40}$", description="Azure OpenAI api-version"
    )
    stream: bool | None = Field(
        default=None, description="Ask the provider for server-sent events (the timeout "
        "then bounds each event rather than the whole answer)"
    )  # fmt: skip

    @model_validator(mode="after")
    def _endpoint_known(self) -> ChainTierIn:
        if self.provider in ("azure_openai", "openai_compatible") and not self.base_url:
            raise ValueError(f"{self.provider} needs base_url (the server or Azure resource)")
        return self


class ChainIn(StrictModel):
    tiers: list[ChainTierIn] = Field(max_length=8)


class ChainTierOut(BaseModel):
    provider: str
    model: str
    base_url: str | None = None
    timeout_s: float | None = None
    api_version: str | None = None
    stream: bool | None = None
    has_api_key: bool


class ChainOut(BaseModel):
    tiers: list[ChainTierOut]
    then: list[str] = Field(
        default=["knowledge", "rules"], description="What always follows the last tier"
    )


class ErasureIn(StrictModel):
    user_id: str = Field(min_length=1, max_length=256, description="The data subject")


class ErasureRequestOut(BaseModel):
    request_id: str
    status: Literal["queued", "running", "completed", "failed"]
    subject_digest: str = Field(description="keyed digest of tenant and user id: never the id")
    subject_digest_scheme: str = "sha256"  # hmac-sha256 since migration 0014
    executor: Literal["dagster", "process", "cli"] | None = Field(
        default=None, description="what carries the erasure out"
    )
    run_id: str | None = Field(default=None, description="the Dagster run (or process id)")
    created_at: datetime | None = None
    finished_at: datetime | None = None
    certificate: dict[str, Any] | None = None


class InvoiceLineOut(BaseModel):
    item: str
    description: str
    quantity: int
    unit_amount: Decimal = Field(description="exact decimal; quantity x unit_amount = amount")
    amount: Decimal = Field(description="exact decimal, rounded half-up to the cent")
    metadata: dict[str, str] = Field(default_factory=dict)


class InvoiceOut(BaseModel):
    invoice_id: str
    month: str = Field(description="YYYY-MM")
    currency: str
    status: Literal["draft", "final"]
    plan: str
    lines: list[InvoiceLineOut]
    total: Decimal


class InvoiceList(BaseModel):
    invoices: list[InvoiceOut]
