"""The OpenAPI document tells the truth about the served API: Schemathesis generates requests
for every operation (bounded, derandomized) against a real `postway serve` with a token, and
every answer must be non-5xx, documented, and shaped as documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from served import Served, served_postway

EXAMPLES = 15  # per operation; ~30 operations keep the whole run well under two minutes
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    # a relay test that finds a real host gives up quickly; private targets are refused
    with served_postway(
        tmp, POSTWAY_RELAY_TEST_TIMEOUT="2", POSTWAY_SMTP_CONNECT_TIMEOUT="2"
    ) as srv:
        yield srv


def test_every_operation_answers_as_documented(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    auth = {"Authorization": f"Bearer {served.token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,  # the same examples every run
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=served.base_url, headers=auth, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_document_has_no_422_and_declares_bearer_auth(served: Served) -> None:
    doc = httpx.get(f"{served.base_url}/openapi.json").json()
    assert doc["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`postway token create`)",
        }
    }
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            assert "422" not in op["responses"], where
            if path.startswith("/api/v1/"):
                assert op.get("security") == [{"HTTPBearer": []}], where
                error = op["responses"]["401"]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/ErrorOut"}, where
            if "requestBody" in op:
                assert "413" in op["responses"] and "400" in op["responses"], where
    assert "HTTPValidationError" not in doc["components"]["schemas"]


async def test_every_error_body_is_shaped_error(env) -> None:
    acct = await env.account("ada@acme.example")
    client = env.app_client
    answers = [
        await acct.client.get("/api/v1/nowhere"),  # no such route
        await acct.client.delete("/api/v1/identities"),  # no such method
        await client.get("/api/v1/identities"),  # no token
        await acct.client.get("/api/v1/identities/nope"),  # not found
        await acct.client.post(
            "/api/v1/identities", content=b"{", headers={"Content-Type": "application/json"}
        ),
        await acct.client.get("/api/v1/messages", params={"limit": "many"}),
    ]
    answers.append(await client.get("/no/such/page"))
    assert [r.status_code for r in answers] == [404, 405, 401, 404, 400, 400, 404]
    for r in answers:
        body = r.json()
        assert isinstance(body.get("error"), str) and "detail" not in body, r.text
