{{ config(materialized='incremental', unique_key=['tenant_id', 'day', 'intent'], incremental_strategy='delete+insert') }}

-- Per tenant, day and recognised intent ('(none)': no intent above the threshold) of the
-- users' messages: volume, mean confidence, and how many got only a fallback reply.
select
    tenant_id,
    day,
    coalesce(intent, '(none)') as intent,
    count(*) as messages,
    avg(confidence) as mean_confidence,
    count(*) filter (where answered_by_fallback) as fallbacks,
    count(*) filter (where answered_by_fallback) / count(*) as fallback_rate
from {{ ref('int_turns_ordered') }}
where direction = 'in'
    and {{ in_window('day') }}
group by 1, 2, 3
