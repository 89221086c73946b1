"""Fuzz the management API from its own ``/openapi.json`` with schemathesis.

A real ``swell serve`` (the echo example pushed and promoted) answers a few
thousand generated requests, valid and invalid ones: none may be a 5xx, and
every 4xx must be JSON with ``error`` and a ``reason`` or ``detail`` that says
what was wrong.

Path parameters are drawn from the real ids and names as well as from anything
the schema allows, so the fuzzer reaches past the 404s into validation.  Left
out, because they would end the run's meaning rather than test anything:
``DELETE /v1/models/{model_id}`` (it would delete the one model, and every later
case would be a 404).  Revoking keys stays in: random ids are 404s, and the
server refuses to revoke the last workspace key (the test's own).

Deterministic (``derandomize``, no example database) so CI does not flake; the
number of examples per operation is ``SWELL_FUZZ_EXAMPLES`` (default 130);
``SWELL_FUZZ_RANDOM=1`` draws new cases on every run.  The server's state
moves as the run goes (a deactivated deployment, new keys), so a run is only
as repeatable as the order of the operations.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fuzz_support import KEY, Live, live_server  # type: ignore[import-not-found]
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("SWELL_FUZZ_EXAMPLES", "130"))
RANDOM = bool(os.environ.get("SWELL_FUZZ_RANDOM"))  # new cases each run, for a developer's hunt (CI: fixed)
ODD_NAMES = ["missing", "🦀"]  # negative cases send any string at all
STATUSES: Counter[int] = Counter()  # every answer's status, for the summary at the end


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from live_server(tmp_path_factory.mktemp("swell-fuzz"))


def _with_real_values(spec: dict[str, Any], live: Live) -> dict[str, Any]:
    """The spec with each id-like path parameter drawn from the real ids and names and a few odd ones.

    Valid (positive) cases then reach the handlers' own validation; invalid
    (negative) cases still send anything at all.
    """
    real = {
        "model_id": [live.model_id, "echo"],
        "deployment_id": [live.deployment_id],
        "environment": ["production", "staging"],
    }
    spec = copy.deepcopy(spec)
    for operations in spec["paths"].values():
        for operation in operations.values():
            # `follow=true` streams until the caller hangs up, as it should: the
            # fuzzer, which waits for an answer's end, sends the other parameters
            # (tests/integration/live/test_observe_live.py follows for real).
            operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "follow"]
            for parameter in operation.get("parameters", []):
                values = real.get(parameter["name"])
                if parameter.get("in") == "path" and values:
                    parameter["schema"] = {"type": "string", "enum": [*values, *ODD_NAMES]}
    return spec


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    total = sum(STATUSES.values())
    line = ", ".join(f"{status}: {n}" for status, n in sorted(STATUSES.items()))
    request.config.stash.setdefault(SUMMARY, []).append(f"fuzzed {total} requests ({line})")
    print(f"\nfuzzed {total} requests ({line})")


SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    response = live.http.get("/openapi.json")
    assert response.status_code == 200, response.text
    schema = schemathesis.openapi.from_dict(_with_real_values(response.json(), live))
    schema.config.update(base_url=live.swell.url, headers={"Authorization": f"Api-Key {KEY}"}, request_timeout=30)
    return schema


def names_the_problem(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is a JSON object with ``error`` and a ``reason`` or a non-empty ``detail`` of field/value/allowed."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:300]!r}") from None
    if not isinstance(body, dict) or not body.get("error"):
        raise AssertionError(f"{response.status_code} without an 'error': {body!r}"[:500])
    reason, detail = body.get("reason"), body.get("detail")
    if not reason and not detail:
        raise AssertionError(f"{response.status_code} says what but not why: {body!r}"[:500])
    if detail is not None:
        if not isinstance(detail, list) or not all(
            isinstance(e, dict) and {"field", "value", "allowed"} <= e.keys() and e["allowed"] for e in detail
        ):
            raise AssertionError(f"{response.status_code} detail without field/value/allowed: {body!r}"[:500])
    return None


# Left out (see the module's docstring).
EXCLUDED = {("DELETE", "/v1/models/{model_id}")}


def test_api_answers_every_request_with_a_reason(api_schema: Any) -> None:
    """Every operation, valid and invalid cases alike.

    Driven through schemathesis' strategies and Hypothesis directly rather than
    its pytest plugin, which follows pytest's internals (it broke on pytest
    9.2); a failing operation does not stop the others, and all failures are
    reported together.
    """
    operations = [result.ok() for result in api_schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in EXCLUDED]
    assert len(operations) > 20, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(
            max_examples=EXAMPLES,
            derandomize=not RANDOM,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure shows the case as found, in bounded time
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases)
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(checks=[not_a_server_error, names_the_problem])
            STATUSES[response.status_code] += 1

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 (every operation's failure is reported)
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
