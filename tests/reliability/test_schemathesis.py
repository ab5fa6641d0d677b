"""Schemathesis against the served OpenAPI document: no 5xx, every 4xx in the OpenAI shape."""

from __future__ import annotations

import asyncio
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Ok

from tests.e2e.conftest import ADMIN_TOKEN, settings_for
from tests.reliability.conftest import admin_setup, processes

# A name schemathesis will not generate, so a generated revoke or budget change leaves it alone.
CLIENT = "schemathesis-client-7f3a9c"
EXAMPLES = 12  # per operation and generation mode: ~10 operations x 2 modes, a few seconds
LEGITIMATE_503 = {"no_qualifying_offer", "unavailable"}
EXPECTED = {
    ("POST", "/v1/quote"), ("GET", "/v1/clearings/{clearing_id}"), ("GET", "/v1/models"),
    ("GET", "/v1/account"), ("GET", "/v1/admin/keys"), ("POST", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys/{name}/revoke"), ("POST", "/v1/admin/keys/{name}/budget"),
    ("GET", "/v1/admin/providers"), ("POST", "/v1/admin/providers"),
    ("DELETE", "/v1/admin/providers/{name}"),
}  # fmt: skip


def check_reply(case: Case[Any], status: int, body: Any) -> None:
    """No 5xx but a legitimate 503; every error answer in the OpenAI error shape."""
    where = f"{case.method} {case.formatted_path}: {status} {body!r:.300}"
    if status < 400:
        return
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), where
    assert {"message", "type", "code", "param"} <= set(body["error"]), where
    if status >= 500:
        assert status == 503 and body["error"]["code"] in LEGITIMATE_503, where


def run_operation(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    session: requests.Session,
    auth: str,
) -> list[int]:
    """Up to EXAMPLES generated cases of one operation, each sent with `auth`."""
    statuses: list[int] = []

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(operation.as_strategy(generation_mode=mode))
    def check(case: Case[Any]) -> None:
        reply = case.call(session=session, headers={"authorization": auth}, timeout=10)
        try:
            body = reply.json()
        except ValueError:
            body = reply.content
        check_reply(case, reply.status_code, body)
        statuses.append(reply.status_code)
        # The same case with no credentials: 401 in the OpenAI shape, whatever the input.
        bare = case.call(session=session, headers={"authorization": ""}, timeout=10)
        check_reply(case, bare.status_code, bare.json())
        assert bare.status_code == 401, (case.method, case.formatted_path, bare.text)

    check()
    return statuses


def test_generated_cases_for_every_operation(redis_url: str, key_prefix: str) -> None:
    """No offers are posted: a well-formed quote is a 503 no_qualifying_offer, never a 500."""
    with processes(settings_for(redis_url, key_prefix), 1) as [(_, url)]:
        _, api = asyncio.run(admin_setup(url, {}, {CLIENT: "1"}))
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        results = list(schema.get_all_operations())
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        assert len(operations) == len(results), "the served document has an invalid operation"
        served = {(op.method.upper(), op.path) for op in operations}
        assert served >= EXPECTED, f"operations missing from the document: {EXPECTED - served}"
        seen: dict[tuple[str, str], set[int]] = {}
        with requests.Session() as session:
            session.headers["connection"] = "keep-alive"
            for operation in operations:
                admin = operation.path.startswith("/v1/admin")
                auth = f"Bearer {ADMIN_TOKEN if admin else api[CLIENT]}"
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    try:
                        statuses = run_operation(operation, mode, session, auth)
                    except Unsatisfiable:
                        # Nothing to break (no parameters, or a free-form string in the path).
                        assert mode is GenerationMode.NEGATIVE, operation.label
                        continue
                    seen.setdefault((operation.method.upper(), operation.path), set()).update(
                        statuses
                    )
    assert all(seen.values()), f"an operation got no generated case: {seen}"
    assert any(200 in statuses for statuses in seen.values())  # valid cases reached the routes
    assert any(400 in statuses or 404 in statuses for statuses in seen.values())
