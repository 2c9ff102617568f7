"""Reconciliation's settings (`QT_RECONCILE_*`): read by the workers that keep its Temporal
Schedule, by the ReconcileWorkflow's activities and by `qt reconcile`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReconcileSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QT_RECONCILE_", extra="ignore")

    # The Schedule's interval (overlap SKIP: a run still going when the next is due is not doubled).
    interval_s: float = Field(60.0, ge=5, le=86_400)
    # A position no running workflow owns: adopt it (a TradeWorkflow takes it over), flatten it
    # (reduce-only market close), or only report it.
    orphans: Literal["adopt", "flatten", "report"] = "adopt"
    # A finding is acted on only when a second look this much later sees it again: a trade
    # caught between two of its steps (or visibility a moment behind) is never "fixed".
    confirm_s: float = Field(5.0, ge=0, le=300)
    # False: the workers neither create the Schedule nor run it at start (`qt reconcile` still works).
    schedule: bool = True
