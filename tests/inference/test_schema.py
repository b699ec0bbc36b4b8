"""schemathesis against the service's own OpenAPI schema, over the Unix socket (every route, POSTs
included): no 5xx and responses that match the schema, for valid and invalid inputs alike.

Driven through hypothesis directly (schemathesis' pytest plugin does not load under this pytest)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from memo.contract import PREDICTIONS_CHANGES_PATH
from tests.inference.conftest import Service

EXAMPLES = 100  # per operation and mode: 13 operations x 2 modes x up to 100 requests


def send(service: Service, case: schemathesis.Case) -> httpx.Response:
    if case.path == PREDICTIONS_CHANGES_PATH:  # a valid long-poll would wait (30 s by default, up to 300)
        wait = (case.query or {}).get("wait_s", 0.0)
        if isinstance(wait, int | float) and not isinstance(wait, bool):
            case.query = {**(case.query or {}), "wait_s": min(wait, 0.01)}
    kw = case.as_transport_kwargs(base_url="http://memo")
    content = kw.get("content", kw.get("data"))
    request = httpx.Request(kw["method"], kw["url"], headers=kw.get("headers"), params=kw.get("params"),
                            content=content, json=kw.get("json") if content is None else None)
    return service.unix.send(request)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(shared_service: Service, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_dict(shared_service.unix.get("/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/events", "/v1/predictions", "/v1/apps/{app}/profile"}
    statuses: dict[int, int] = {}
    for op in operations:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = send(shared_service, case)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (no inputs, or only unconstrained strings)
            assert mode is GenerationMode.NEGATIVE
    assert not [s for s in statuses if s >= 500], statuses
    assert shared_service.alive()


def test_whatever_was_accepted_loads_again_at_start(shared_service: Service) -> None:
    """After the fuzz above (whatever it got stored), a restart comes up healthy and answers: no row
    accepted once may stop a later start (issue 13)."""
    users = [u["uid"] for u in shared_service.unix.get("/v1/users").json()]
    shared_service.restart()
    health = shared_service.unix.get("/healthz").json()
    assert health["status"] == "ok", health
    for uid in users[:20]:
        assert shared_service.unix.get("/v1/predictions", params={"uid": uid}).status_code == 200
