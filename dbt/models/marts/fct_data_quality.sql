{{ config(materialized='incremental', unique_key=['tenant_id', 'day'], incremental_strategy='delete+insert') }}

-- Per tenant and day: how complete and clean the day's data is (the dashboards'
-- data-quality page). Each count should be zero or small: users' messages no reply
-- followed, without a recognised intent or a detected language, replies without a
-- latency, event ids seen twice; plus how many messages had personal data masked.
select
    tenant_id,
    day,
    count(*) as messages,
    count(*) filter (where direction = 'in') as user_messages,
    count(*) filter (where direction = 'in' and next_direction is distinct from 'out')
        as unanswered,
    count(*) filter (where direction = 'in' and intent is null) as without_intent,
    count(*) filter (where direction = 'in' and language is null) as without_language,
    count(*) filter (where direction = 'out' and latency_ms is null) as replies_without_latency,
    count(*) - count(distinct event_id) as duplicate_events,
    count(*) filter (where pii_found > 0) as pii_masked,
    max(created_at) as last_message_at
from {{ ref('int_turns_ordered') }}
where {{ in_window('day') }}
group by 1, 2
