"""End-to-end: the published OpenAPI document, and schemathesis against the real gateway with it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import openapi_document
from tests.servers import ServerProcess, gateway_app

ADMIN_KEY = f"admin-{secrets.token_hex(8)}"
CALLER = f"sk-test-{secrets.token_hex(8)}"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def documented(
    upstream: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A pass-through gateway with an admin key, for schemathesis."""
    server = gateway_app(upstream.url, database_url, admin_key=ADMIN_KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_openapi_json_is_the_document(documented: ServerProcess) -> None:
    response = httpx.get(documented.url + "/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    assert document == openapi_document()
    assert document["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/conversations/{conversation_id}", "/admin/keys", "/healthz"):
        assert path in document["paths"]


# The document the gateway serves (the test above checks /openapi.json answers exactly this), one test per
# operation. Hypothesis drives schemathesis' strategy for each directly: the suite runs with schemathesis'
# pytest plugin off (`-p no:schemathesis` in pyproject.toml), which would otherwise load, and rewrite the
# asserts of, all of schemathesis in every xdist worker.
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation.label for operation in OPERATIONS])
def test_the_gateway_conforms_to_its_openapi_document(operation: Any, documented: ServerProcess) -> None:
    token = ADMIN_KEY if operation.path.startswith("/admin") else CALLER

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def conforms(case: Any) -> None:
        case.call_and_validate(
            base_url=documented.url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30
        )

    conforms()
