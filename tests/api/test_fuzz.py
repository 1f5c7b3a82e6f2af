"""Property-based: whatever the OpenAPI document allows, or nearly allows, is never a 500.

Schemathesis draws requests (valid and invalid) from our own OpenAPI document; they go
through the app against the real stores, with a real tenant key or the admin token.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.utils.factories import create_tenant

ADMIN_PATHS = ("/v1/tenants",)


@pytest.fixture(scope="module")
def operations(client):
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture(scope="module")
def fuzz_tenant(client, admin_headers):
    return create_tenant(client, admin_headers, name="fuzz", rate_limit=10_000_000)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_yields_a_server_error(operations, client, admin_headers, fuzz_tenant, mode):
    # The hot path gets about a third of the examples.
    hot = [op for op in operations if op.path == "/v1/messages"]
    strategy = st.one_of(
        *(operation.as_strategy(generation_mode=mode) for operation in [*operations, *hot * 5])
    )

    @given(case=strategy)
    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        headers = dict(kwargs.pop("headers", None) or {})
        admin = case.path.startswith(ADMIN_PATHS)
        token = admin_headers["Authorization"] if admin else f"Bearer {fuzz_tenant.api_key}"
        headers["Authorization"] = token  # past auth, into the handlers (401s: test_errors)
        response = client.request(headers=headers, **kwargs)
        case.validate_response(response, checks=[not_a_server_error])

    check()
