-- The messages of every conversation with a message in the run's window (all of each
-- conversation's messages, so per-conversation facts stay exact), each with the message
-- after it: an inbound message's reply is the message that follows it.
select
    *,
    direction = 'in' and next_direction = 'out' and next_is_fallback as answered_by_fallback
from (
    select
        *,
        lead(direction) over conversation as next_direction,
        lead(is_fallback) over conversation as next_is_fallback
    from {{ ref('stg_turns') }}
    where conversation_id in (
        select conversation_id from {{ ref('stg_turns') }} where {{ in_window('day') }}
    )
    window conversation as (
        partition by conversation_id order by created_at, direction, event_id
    )
)
