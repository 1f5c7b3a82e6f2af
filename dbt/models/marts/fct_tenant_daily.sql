{{ config(materialized='incremental', unique_key=['tenant_id', 'day'], incremental_strategy='delete+insert') }}

-- One row per tenant and day. Message counts, users and latency are of that day's messages;
-- conversation rates are of the conversations that started that day. A run rebuilds the
-- days of its window and the start days of conversations that continued into it.
with affected as (
    select distinct tenant_id, day from {{ ref('stg_turns') }} where {{ in_window('day') }}
    union
    select distinct tenant_id, day from {{ ref('int_conversations') }}
),

turns as (
    select t.*
    from {{ ref('stg_turns') }} as t
    semi join affected as a on t.tenant_id = a.tenant_id and t.day = a.day
),

messages as (
    select
        tenant_id,
        day,
        count(*) filter (where direction = 'in') as messages_in,
        count(*) filter (where direction = 'out') as messages_out,
        count(distinct conversation_id) as conversations,
        count(distinct user_key) filter (where direction = 'in') as active_users,
        count(*) filter (where is_fallback) as fallback_replies,
        quantile_cont(latency_ms, 0.5) filter (where is_first_reply) as latency_p50_ms,
        quantile_cont(latency_ms, 0.95) filter (where is_first_reply) as latency_p95_ms,
        coalesce(sum(prompt_tokens), 0) as prompt_tokens,
        coalesce(sum(completion_tokens), 0) as completion_tokens,
        coalesce(sum(cost_usd), 0) as cost_usd
    from turns
    group by 1, 2
),

started as (
    -- fct_conversations holds every conversation, this run's recomputed ones included
    select
        c.tenant_id,
        c.day,
        count(*) as conversations_started,
        count(*) filter (where status = 'completed') as completed,
        count(*) filter (where status = 'abandoned') as abandoned,
        count(*) filter (where status = 'escalated') as escalated,
        avg(rating) as csat
    from {{ ref('fct_conversations') }} as c
    semi join affected as a on c.tenant_id = a.tenant_id and c.day = a.day
    group by 1, 2
)

select
    m.tenant_id,
    m.day,
    m.messages_in,
    m.messages_out,
    m.conversations,
    m.active_users,
    coalesce(s.conversations_started, 0) as conversations_started,
    coalesce(s.completed, 0) as conversations_completed,
    coalesce(s.abandoned, 0) as conversations_abandoned,
    coalesce(s.escalated, 0) as conversations_escalated,
    s.completed / nullif(s.conversations_started, 0) as completion_rate,
    s.escalated / nullif(s.conversations_started, 0) as escalation_rate,
    m.fallback_replies,
    m.fallback_replies / nullif(m.messages_out, 0) as fallback_rate,
    m.latency_p50_ms,
    m.latency_p95_ms,
    s.csat,
    m.prompt_tokens,
    m.completion_tokens,
    m.cost_usd
from messages as m
left join started as s using (tenant_id, day)
