select
    event_id,
    event_type,
    tenant_id,
    conversation_id,
    user_key,
    channel,
    payload,
    try_cast(json_extract_string(payload, '$.rating') as double) as rating,
    created_at,
    date as day
from {{ source('silver', 'conversation_events') }}
