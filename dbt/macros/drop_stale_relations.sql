{#
  Drops what a build by an earlier version of this project left in the warehouse file
  that only that build's dbt session could read; run before every `dbt build` or `dbt
  run` (dbt_project.yml's on-run-start), so that a plain DuckDB connection to the file
  can read everything in it:
  - any relation named after a model that is now ephemeral (such a model has none), as
    the staging views, over the views below;
  - the views dbt-duckdb's delta plugin made for the silver sources where dbt places a
    source by default (the warehouse's catalog, a schema named after the source:
    `silver.turns`, `select * from warehouse_silver_turns_df`, a dataframe registered in
    that session only), then that schema once it is empty. The sources are now in
    `lake_session`, an in-memory catalog (profiles.yml), so no run, `dbt compile` or
    `dbt show` writes such a view to the file again.
#}
{% macro drop_stale_relations() %}
    {% if execute %}
        {% for node in graph.nodes.values()
            if node.resource_type == 'model' and node.config.materialized == 'ephemeral' %}
            {% set relation = adapter.get_relation(node.database, node.schema, node.alias) %}
            {% if relation is not none %}
                {% do adapter.drop_relation(relation) %}
            {% endif %}
        {% endfor %}
        {% set schemas = [] %}
        {% for source in graph.sources.values()
            if source.config.get('plugin') and source.database != target.database %}
            {# the catalog itself, not dbt's relation cache, which does not hold this schema #}
            {% if _relation_types(target.database, source.source_name, source.identifier) == ['VIEW'] %}
                {% do run_query('drop view if exists ' ~ _qualified(target.database, source.source_name, source.identifier)) %}
            {% endif %}
            {% if source.source_name != target.schema and source.source_name not in schemas %}
                {% do schemas.append(source.source_name) %}
            {% endif %}
        {% endfor %}
        {% for schema in schemas if _relation_types(target.database, schema) == [] %}
            {% do run_query('drop schema if exists ' ~ _qualified(target.database, schema)) %}
        {% endfor %}
    {% endif %}
{% endmacro %}

{# The types ('BASE TABLE', 'VIEW') of the relations in a schema, or of the one named. #}
{% macro _relation_types(database, schema, name=none) %}
    {% set query %}
        select table_type from information_schema.tables
        where table_catalog = '{{ database }}' and table_schema = '{{ schema }}'
        {% if name is not none %} and table_name = '{{ name }}' {% endif %}
    {% endset %}
    {% do return(run_query(query).columns[0].values() | list) %}
{% endmacro %}

{# database.schema[.name], each part quoted #}
{% macro _qualified(database, schema, name=none) %}
    {% set quoted = [] %}
    {% for part in [database, schema] + ([name] if name is not none else []) %}
        {% do quoted.append(adapter.quote(part)) %}
    {% endfor %}
    {% do return(quoted | join('.')) %}
{% endmacro %}
