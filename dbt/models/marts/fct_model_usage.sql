{{ config(materialized='incremental', unique_key=['tenant_id', 'day', 'tier', 'provider', 'model'], incremental_strategy='delete+insert') }}

-- Per tenant, day and answering tier (with provider and model for LLM answers; '-' where
-- none): replies, turns, tokens, cost and reply latency. What the fallback chain cost.
select
    tenant_id,
    day,
    coalesce(tier, '-') as tier,
    coalesce(provider, '-') as provider,
    coalesce(model, '-') as model,
    count(*) as replies,
    count(*) filter (where is_first_reply) as turns,
    coalesce(sum(prompt_tokens), 0) as prompt_tokens,
    coalesce(sum(completion_tokens), 0) as completion_tokens,
    coalesce(sum(cost_usd), 0) as cost_usd,
    quantile_cont(latency_ms, 0.5) filter (where is_first_reply) as latency_p50_ms
from {{ ref('stg_turns') }}
where direction = 'out'
    and {{ in_window('day') }}
group by 1, 2, 3, 4, 5
