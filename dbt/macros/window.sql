{# The days a run rebuilds: all of them by default, or the partition range Dagster passes
   as vars (min_day, max_day) for an incremental run. #}
{% macro in_window(column) -%}
    {{ column }} between cast('{{ var("min_day", "0001-01-01") }}' as date)
                     and cast('{{ var("max_day", "9999-12-31") }}' as date)
{%- endmacro %}
