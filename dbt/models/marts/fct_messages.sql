{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert') }}

-- Every message, PII-masked, users pseudonymized; a run writes the days of its window.
select
    event_id, tenant_id, conversation_id, user_key, channel, direction, message_type, text,
    pii_found, language, intent, confidence, tier, provider, model, latency_ms, flow_version,
    variant, model_version, prompt_tokens, completion_tokens, cost_usd, is_fallback,
    is_first_reply, answered_by_fallback, created_at, day
from {{ ref('int_turns_ordered') }}
where {{ in_window('day') }}
