"""Schemathesis fuzzes the API's OpenAPI schema against the running app on the real stack.

The app runs in the test process (the `api` fixture: uvicorn, Temporal dev server, Redis, the
paper exchange, every worker); the fuzzer runs in a child process (`python -m
tests.api.test_fuzz CONFIG`) and reaches it over HTTP like any client, so the two share no
event loop, no GIL and no Hypothesis state. Per operation, in a fixed order:

- the schema's own examples, then Schemathesis's coverage cases (deterministic: every
  boundary, a missing required field, a wrong type, an unknown field, a too-long string, a
  value outside its pattern or enum, no token, a method the path does not have),
- then Hypothesis-generated cases, valid and invalid (`derandomize`: the same cases every run),
- then, on a protected operation, a wrong token and no token: 401/403 and nothing done.

Checks on every answer: no 5xx, the status is one the operation declares, the body matches the
schema declared for that status; a refused intent started no trade. The run starts with two
trades OPEN and one REJECTED, so the actions meet more than unknown ids: the REJECTED one gets
every action (409), one OPEN one fuzzed adjust/pause/resume (then a real adjust and close), the
other is left for the kill switch. Safe mode is ON while intents are fuzzed (a fuzzed intent
may start a trade: its gates reject it); the safety switches come last, and the test ends with
both switches off and no trade of its own running.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.api.conftest import TOKEN
from tests.api.test_api import flat, open_trade
from trading.intent import workflow_id_for_intent_id
from workflows.starter import WORKFLOW_TYPE

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BAD_TOKENS = {403: [{"Authorization": "Bearer wrong-token"}, {"Authorization": f"Bearer {TOKEN}x"}],
              401: [{}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}]}
FUZZ_S = 180  # the child's own deadline; a normal run takes well under a minute

# Generated cases per operation (valid, invalid), beside every example and every coverage case.
DEFAULT = (25, 25)
BUDGET = {"POST /api/v1/intents": (40, 40), "GET /api/v1/trades": (40, 40), "POST /api/v1/kill-switch": (15, 15)}
INTENTS = "POST /api/v1/intents"
# Dates at the ends of what Python and the backends can hold (the generators stay near 2000).
EXTREME_DATES = ("0001-01-01T00:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00",
                 "9999-12-31T23:59:59", "1970-01-01T00:00:00Z", "2026-02-30T00:00:00Z")
DATED = ("GET /api/v1/trades", "GET /api/v1/performance")
# Huge and extreme values where the schema sets no bound of its own (or to cross it by far).
_INTENT = {"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "100", "leverage": 5}
HUGE = {
    INTENTS: [{**_INTENT, **change} for change in (
        {"position_size_usd": "9" * 100_000}, {"position_size_usd": "1e999999"}, {"position_size_usd": "1e-999999"},
        {"entry_price": "1e999999"}, {"stop_loss": "-1e999999"}, {"take_profit": "9" * 5000},
        {"leverage": 10 ** 400}, {"confidence": 1e308}, {"reason": "x" * 1_000_000}, {"symbol": "B" * 100_000},
        {"intent_id": "i" * 5000}, {"timestamp": "9999-12-31T23:59:59Z"}, {"timestamp": "0001-01-01T00:00:00"})],
    "POST /api/v1/trades/{workflow_id}/adjust": [
        {"stop_loss": "1e-999999"}, {"stop_loss": "1e999999"}, {"stop_loss": "9" * 100_000},
        {"take_profits": ["1e999999"] * 3}, {"take_profits": ["3500"] * 100_000}, {"reason": "x" * 3_000_000}],
    "POST /api/v1/trades/{workflow_id}/close": [{"reason": "x" * 3_000_000}, {"amount": "1e-999999"}],
    "POST /api/v1/trades/{workflow_id}/terminate": [{"reason": "x" * 3_000_000}],
    "PUT /api/v1/safe-mode": [{"reason": "x" * 3_000_000}, {"reason": "r", "ttl_s": 10 ** 400}],
    "POST /api/v1/kill-switch": [{"reason": "x" * 3_000_000}, {"reason": "r", "wait_s": 1e308}],
}
TRADE = "POST /api/v1/trades/{workflow_id}"
# Order: intents under safe mode; trades (unknown ids, the REJECTED one, the OPEN one); the
# account; the safety switches last.
ORDER = ("/api/v1/intents", "/api/v1/trades", "/api/v1/portfolio", "/api/v1/performance", "/health",
         "/metrics", "/api/v1/safe-mode", "/api/v1/kill-switch")
ON_CLOSED = ("close", "adjust", "pause", "resume", "kill", "terminate")  # a REJECTED trade: 409
ON_OPEN = ("adjust", "pause", "resume")  # the OPEN trade: real updates and signals; closed after


# ====================================================================== the child: the fuzzer


class Fuzzer:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
        self.failures: dict[str, str] = {}
        self.statuses: Counter[str] = Counter()
        self.inputs: Counter[str] = Counter()  # what kind of bad input was sent
        self.calls = 0
        self.started: set[str] = set()  # trades the fuzzed intents started (202/200)

    def call(self, case, headers: dict = AUTH, expect: int | None = None) -> None:
        self.calls += 1
        if headers is AUTH:
            self.inputs[_kind(case)] += 1
        else:  # the bad-token pass: only the header given, none generated
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            self.inputs[f"bad token: {expect}"] += 1
        try:
            response = case.call_and_validate(base_url=self.base_url, session=self.session, headers=headers,
                                              checks=self.checks, timeout=90)
            if expect is not None and response.status_code != expect:
                raise AssertionError(f"expected {expect}, got {response.status_code}: {response.text[:200]}")
            if case.operation.label == INTENTS:
                self.no_half_done_intent(case, response)
        except (Exception, FailureGroup) as err:  # noqa: BLE001 - every failure collected, reported at the end
            for error in err.exceptions if isinstance(err, BaseExceptionGroup) else [err]:
                key = f"{case.operation.label}: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
                if key not in self.failures:
                    self.failures[key] = f"{str(error)[:800]}\n{case.as_curl_command(headers=headers)[:1000]}"
                    print(f"FAIL {key}", file=sys.stderr, flush=True)
        else:
            self.statuses[f"{case.operation.label} -> {response.status_code}"] += 1

    def no_half_done_intent(self, case, response) -> None:
        """A refused intent (4xx but 409: that id's trade exists) started no trade under its id."""
        if response.status_code in (200, 202):
            self.started.add(response.json()["workflow_id"])
            return
        body = case.body if isinstance(case.body, dict) else {}
        key = body.get("intent_id") or (case.headers or {}).get("Idempotency-Key")
        if response.status_code == 409 or not isinstance(key, str) or not key:
            return
        workflow_id = workflow_id_for_intent_id(key)
        if workflow_id in self.started:
            return
        found = self.session.get(f"{self.base_url}/api/v1/trades/{workflow_id}", headers=AUTH, timeout=30)
        if found.status_code != 404:
            raise AssertionError(f"refused with {response.status_code}, yet {workflow_id} answers {found.status_code}")

    def generated(self, strategy, max_examples: int, **call) -> None:
        @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                  verbosity=Verbosity.quiet, report_multiple_bugs=False)
        @given(strategy)
        def run(case) -> None:
            self.call(case, **call)

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (no parameter, no body)
            pass

    def once(self, operation, workflow_id: str, body: dict, expect: int) -> None:
        """One real action on a live trade (its 2xx body checked against the schema too)."""
        self.generated(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"workflow_id": workflow_id},
                                             body=body), 1, expect=expect)

    def operation(self, operation, budget: tuple[int, int], **fixed) -> None:
        valid_n, invalid_n = budget
        for strategy in operation.get_strategies_from_examples(**fixed):
            self.generated(strategy, 1)
        if not fixed:
            schema = operation.schema
            for case in schema.iter_coverage_cases(
                    operation, generation_modes=list(GenerationMode),
                    generation_config=schema.config.generation_for(operation=operation, phase="coverage")):
                self.call(case)
        self.generated(operation.as_strategy(GenerationMode.POSITIVE, **fixed), valid_n)
        self.generated(operation.as_strategy(GenerationMode.NEGATIVE, **fixed), invalid_n)
        if operation.definition.raw.get("security"):
            for expect, headers in BAD_TOKENS.items():
                for header in headers:
                    self.generated(operation.as_strategy(GenerationMode.POSITIVE, **fixed), 2,
                                   headers=header, expect=expect)


def _kind(case) -> str:
    meta = case.meta
    if meta is None:
        return "unknown"
    data = meta.phase.data
    scenario = getattr(data, "scenario", None)
    if scenario is not None:
        return f"coverage: {scenario}"
    return f"{meta.phase.name}: {meta.generation.mode}"


def _order(label: str) -> tuple[int, str]:
    path = label.split(" ", 1)[1]
    return next((i for i, prefix in enumerate(ORDER) if path.startswith(prefix)), len(ORDER)), label


def fuzz(config: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{config['base_url']}/openapi.json", config=schemathesis.Config())
    operations = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
    fuzzer = Fuzzer(config["base_url"])
    closed_at_last = False
    for label in sorted(operations, key=_order):
        if time.monotonic() - started > FUZZ_S:
            fuzzer.failures[f"{label}: not fuzzed"] = f"the run passed its {FUZZ_S} s budget"
            break
        if not closed_at_last and _order(label)[0] > ORDER.index("/api/v1/trades"):
            closed_at_last = True  # the trades are done with: close the open one for real
            fuzzer.once(operations[f"{TRADE}/close"], config["open"], {"reason": "fuzzed"}, 200)
        operation = operations[label]
        fuzzer.operation(operation, BUDGET.get(label, DEFAULT))
        action = label.rsplit("/", 1)[-1]
        if "{workflow_id}" in label and (action in ON_CLOSED or label.startswith("GET")):
            fuzzer.operation(operation, (8, 8), path_parameters={"workflow_id": config["closed"]})
        if "{workflow_id}" in label and (action in ON_OPEN or label.startswith("GET")):
            fuzzer.operation(operation, (12, 12), path_parameters={"workflow_id": config["open"]})
        for body in HUGE.get(label, ()):  # on the OPEN trade: the one a real update reaches
            fixed = {"path_parameters": {"workflow_id": config["open"]}} if "{workflow_id}" in label else {}
            fuzzer.generated(operation.as_strategy(GenerationMode.POSITIVE, body=body, **fixed), 1)
        if label in DATED:
            for value, name in itertools.product(EXTREME_DATES, ("since", "until")):
                fuzzer.generated(operation.as_strategy(GenerationMode.POSITIVE, query={name: value}), 1)
        if label == f"{TRADE}/adjust":
            fuzzer.once(operation, config["open"], {"stop_loss": "3300"}, 200)  # a stop the validator takes
        print(f"{label}: {fuzzer.calls} calls, {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return {"calls": fuzzer.calls, "seconds": round(time.monotonic() - started, 1), "failures": fuzzer.failures,
            "statuses": dict(sorted(fuzzer.statuses.items())), "inputs": dict(fuzzer.inputs.most_common()),
            "operations": len(operations)}


# ========================================================================= the test: the stack


async def _cleanup(api, temporal_client, since: datetime) -> list[str]:
    """Both switches off; every trade this test started ended (killed, else terminated)."""
    await api.delete("/api/v1/kill-switch")
    await api.delete("/api/v1/safe-mode")
    query = (f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' "
             f"AND StartTime >= '{since.isoformat()}'")
    left = [w.id async for w in temporal_client.list_workflows(query)]
    for workflow_id in left:
        handle = temporal_client.get_workflow_handle(workflow_id)
        await handle.cancel()
        try:
            await asyncio.wait_for(handle.result(), 30)
        except Exception:  # noqa: BLE001 - killed or not, it must not outlive the test
            if (await handle.describe()).status.name == "RUNNING":
                await handle.terminate(reason="fuzz test cleanup")
    return left


async def test_the_openapi_schema_fuzzed_on_the_real_stack_gets_no_5xx_and_matches_its_schema(
        api, rig, paper, temporal_client):
    since = datetime.now(UTC)
    report = None
    try:
        opened = await open_trade(api, rig, paper, "ETHUSDT", 3400)  # fuzzed, then closed
        for_the_kill_switch = await open_trade(api, rig, paper, "XRPUSDT", "2.0000")
        on = await api.put("/api/v1/safe-mode", {"reason": "fuzzing the API", "ttl_s": 900, "set_by": "test_fuzz"})
        assert on.status_code == 200, on.text
        paper.set_price("BTCUSDT", 63000)
        rejected = await api.post("/api/v1/intents?wait=gates", {"symbol": "BTCUSDT", "side": "BUY",
                                                                 "position_size_usd": "100", "leverage": 5})
        assert rejected.json()["status"] == "REJECTED", rejected.text
        closed = rejected.json()["workflow_id"]
        await rig.result(rig.client.get_workflow_handle(closed))

        config = {"base_url": api.base_url, "open": opened, "closed": closed}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.api.test_fuzz", json.dumps(config), cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(child.communicate(), FUZZ_S + 30)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise
        assert child.returncode == 0, err.decode()[-4000:]
        report = json.loads(out)
    finally:
        left = await _cleanup(api, temporal_client, since)
    print(f"\n{report['calls']} calls on {report['operations']} operations in {report['seconds']} s; "
          f"cleanup ended {left}")
    for line, count in itertools.chain(report["inputs"].items(), report["statuses"].items()):
        print(f"  {count:4d}  {line}")
    assert not report["failures"], "\n\n".join(f"{k}\n{v}" for k, v in report["failures"].items())
    assert report["calls"] > 500
    statuses = {line.rsplit(" ", 1)[-1] for line in report["statuses"]}
    assert {"200", "202", "401", "403", "404", "409", "422"} <= statuses, statuses
    assert {f"{TRADE}/close -> 200", f"{TRADE}/adjust -> 200"} <= set(report["statuses"])
    assert for_the_kill_switch not in left  # the kill switch, fuzzed last, ended it
    assert flat(paper)


if __name__ == "__main__":
    print(json.dumps(fuzz(json.loads(sys.argv[1]))))
