"""The code location loads and the workspace points at it."""

import yaml

from pipelines.definitions import defs


def test_the_dagster_definitions_load():
    definitions = defs()
    assert definitions.resolve_asset_graph() is not None


def test_workspace_yaml_loads_the_pipelines_module():
    with open("workspace.yaml") as handle:
        workspace = yaml.safe_load(handle)
    module = workspace["load_from"][0]["python_module"]
    assert module["module_name"] == "pipelines.definitions"
    assert module["location_name"] == "pipelines"
