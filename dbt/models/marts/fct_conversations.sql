{{ config(materialized='incremental', unique_key='conversation_id', incremental_strategy='delete+insert') }}

-- One row per conversation (its day is the day it started). A run recomputes every
-- conversation with a message in its window, from all of that conversation's messages.
select * from {{ ref('int_conversations') }}
