"""`QT_NOTIFY_*`: where notifications go and which events are sent."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from notifications.events import EventKind


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QT_NOTIFY_", extra="ignore")

    # One apprise URL per target, comma or whitespace separated (tgram://, discord://,
    # slack://, mailto://, json://host/path ...). Empty: nothing is sent.
    urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    events: Annotated[list[EventKind], NoDecode] = Field(default_factory=lambda: list(EventKind))
    poll_interval_s: float = Field(2.0, gt=0)
    # More rejections than this in one poll become one summary message (a replayed stale
    # backlog must not send ten thousand messages).
    max_rejections_listed: int = Field(5, ge=0)
    retry_initial_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    send_timeout_s: float = Field(15.0, gt=0)

    @field_validator("urls", mode="before")
    @classmethod
    def _urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u for u in value.replace(",", " ").split() if u]
        return value

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> object:
        if isinstance(value, str):
            return [e.strip().lower() for e in value.split(",") if e.strip()]
        return value
