"""Health and metrics: what an operator or a load balancer asks first. No token needed.

`/health` checks every part through the app's own clients (Temporal, Redis, the exchange), lists
the pollers Temporal sees per task queue (a queue nobody polls means its trades wait), and the
intake's lag. 200 when every part answers, else 503 with what is down.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from api import reconcile_metrics
from api.services import Services, services
from signals_ingest.intake_status import read_intake_status
from common.task_queues import QUEUES, TRADE_WORKFLOWS

router = APIRouter(tags=["health"])
_TIMEOUT_S = 5
_POLLER_FRESH_S = 90


async def _pollers(svc: Services, queue: str) -> list[dict[str, Any]]:
    kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if queue == TRADE_WORKFLOWS else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    reply = await svc.temporal.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=svc.temporal.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind))
    # Temporal keeps listing a poller for minutes after its process died; a live one polls at
    # least every ~70 s (the long-poll timeout), so older ones are not counted.
    fresh_after = datetime.now(UTC) - timedelta(seconds=_POLLER_FRESH_S)
    return [{"identity": p.identity, "last_access": p.last_access_time.ToDatetime().isoformat() + "Z"}
            for p in reply.pollers if p.last_access_time.ToDatetime().replace(tzinfo=UTC) >= fresh_after]


async def _exchange(svc: Services) -> str:
    await svc.exchange.fetch_time()
    return "ok"


async def _temporal(svc: Services) -> str:
    await svc.temporal.service_client.check_health()
    return "ok"


async def _redis(svc: Services) -> str:
    await svc.redis.ping()
    return "ok"


def _down(err: BaseException) -> str:
    return f"down: {type(err).__name__}: {err}"


@router.get("/health", summary="Is every part reachable; who polls each task queue; the intake's lag",
            responses={503: {"description": "a part is down (the same body, `status: degraded`)"}})
async def health(svc: Services = Depends(services)) -> JSONResponse:
    checks = {"temporal": _temporal(svc), "redis": _redis(svc), "exchange": _exchange(svc)}
    results = await asyncio.gather(*(asyncio.wait_for(c, _TIMEOUT_S) for c in checks.values()),
                                   return_exceptions=True)
    parts = {name: r if isinstance(r, str) else _down(r) for name, r in zip(checks, results)}
    queues: dict[str, Any] = {}
    if parts["temporal"] == "ok":
        polled = await asyncio.gather(*(asyncio.wait_for(_pollers(svc, q), _TIMEOUT_S) for q in QUEUES),
                                      return_exceptions=True)
        for queue, pollers in zip(QUEUES, polled):
            if isinstance(pollers, BaseException):
                queues[queue] = {"pollers": None, "error": _down(pollers)}
            else:
                queues[queue] = {"pollers": len(pollers), "workers": pollers,
                                 **({} if pollers else {"warning": "no worker polls this queue"})}
    intake: dict[str, Any] | str = "unknown"
    if parts["redis"] == "ok":
        try:
            status = await asyncio.wait_for(read_intake_status(svc.redis), _TIMEOUT_S)
            intake = {"lag": status.lag, "pending": status.pending, "dlq_length": status.dlq_length,
                      "oldest_pending_age_s": status.oldest_pending_age_s,
                      "consumers": [c.name for c in status.consumers if c.alive]}
        except Exception as err:  # noqa: BLE001 - shown, never a 500
            intake = _down(err)
    ok = all(value == "ok" for value in parts.values())
    body = {"status": "ok" if ok else "degraded", "parts": parts, "task_queues": queues, "intake": intake}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(svc: Services = Depends(services)) -> Response:
    try:  # the last reconcile report; never a reason for the scrape to fail
        await asyncio.wait_for(reconcile_metrics.refresh(svc.redis), _TIMEOUT_S)
    except Exception:  # noqa: BLE001 - Redis down: the gauges keep their last values
        pass
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
