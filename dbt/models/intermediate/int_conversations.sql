-- One row per conversation with a message in the run's window, over all its messages.
-- status: escalated (handed to a human), abandoned (the last reply was a fallback: the bot
-- could not help and the user left), else completed.
with turns as (
    select * from {{ ref('int_turns_ordered') }}
),

events as (
    select * from {{ ref('stg_conversation_events') }}
    where conversation_id in (select conversation_id from turns)
),

handoffs as (
    select conversation_id, min(created_at) as escalated_at
    from events
    where event_type = 'handoff'
    group by 1
),

ratings as (
    select conversation_id, avg(rating) as rating
    from events
    where event_type = 'feedback' and rating is not null
    group by 1
),

per_conversation as (
    select
        tenant_id,
        conversation_id,
        any_value(user_key) as user_key,
        any_value(channel) as channel,
        min(day) as day,
        min(created_at) as started_at,
        max(created_at) as last_message_at,
        count(*) filter (where direction = 'in') as turns,
        count(*) as messages,
        count(*) filter (where is_fallback) as fallback_replies,
        max_by(is_fallback, created_at) filter (where direction = 'out') as ended_on_fallback
    from turns
    group by 1, 2
)

select
    c.tenant_id,
    c.conversation_id,
    c.user_key,
    c.channel,
    c.day,
    c.started_at,
    c.last_message_at,
    epoch(c.last_message_at) - epoch(c.started_at) as duration_s,
    c.turns,
    c.messages,
    c.fallback_replies,
    h.escalated_at is not null as escalated,
    case
        when h.escalated_at is not null then 'escalated'
        when coalesce(c.ended_on_fallback, false) then 'abandoned'
        else 'completed'
    end as status,
    r.rating
from per_conversation as c
left join handoffs as h using (conversation_id)
left join ratings as r using (conversation_id)
