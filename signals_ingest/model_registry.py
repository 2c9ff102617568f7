"""The signal engine's LightGBM model: loaded from a file, checked, reloaded when replaced.

A model is two files side by side: `model.txt` (LightGBM's text format) and `model.json`
(metadata written by `signals_ingest.train_model`: name, version, feature names, label, data
ranges, validation metrics, trained_at, sha256 of model.txt). A model is refused, with one clear
log line per file state, and the engine falls back to the rule, when:

- a file is missing, unreadable, or the metadata is not a JSON object with name and version;
- its feature names (metadata or booster) differ from `trading.signal_rules.FEATURE_NAMES`
  (a model trained on other columns would read garbage);
- model.txt does not hash to the metadata's `model_sha256` (corrupt, or caught between the two
  renames of a promotion: the next check picks up the finished pair);
- LightGBM cannot parse it, or it does not predict a probability on a neutral row.

Promotion (a later learning workflow): write the new model.txt and model.json (each to a temp
file, then rename), model.txt first. The registry stats both files at most every
`check_interval_s` seconds and reloads when their mtime / size / inode change; what runs is
what is on disk, or the rule when that is not a valid model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from trading.models import Side
from trading.signal_rules import FEATURE_NAMES, vector_values

log = logging.getLogger(__name__)

META_SUFFIX = ".json"


class ModelError(Exception):
    """A model file that must not be used; the message says why, readably."""


@dataclass(frozen=True)
class LoadedModel:
    """A checked booster and its metadata."""

    path: Path
    name: str  # e.g. "lgbm-signal"
    version: str  # e.g. "v1"
    meta: dict[str, Any]
    booster: lgb.Booster
    sha256: str

    @property
    def label(self) -> str:
        """What intents carry in `model` (`lgbm-signal-v1`)."""
        return str(self.meta.get("model") or f"{self.name}-{self.version}")

    def probability_up(self, vector: Mapping[str, float]) -> float:
        row = np.asarray([vector_values(vector)], dtype=np.float64)
        return float(self.booster.predict(row, num_threads=1)[0])

    def predict(self, vector: Mapping[str, float]) -> tuple[Side, float]:
        """(BUY, p) when P(up) = p >= 0.5, else (SELL, 1 - p): confidence in [0.5, 1]."""
        p = self.probability_up(vector)
        if not math.isfinite(p):
            raise ModelError(f"model {self.label} predicted a non-finite probability {p}")
        p = min(1.0, max(0.0, p))
        return (Side.BUY, p) if p >= 0.5 else (Side.SELL, 1.0 - p)


def meta_path_for(model_path: Path) -> Path:
    return Path(model_path).with_suffix(META_SUFFIX)


def load_model(model_path: Path) -> LoadedModel:
    """Load and check a model (rules in the module docstring); `ModelError` says what is wrong."""
    model_path = Path(model_path)
    meta_path = meta_path_for(model_path)
    try:
        text = model_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {model_path} does not exist") from None
    except OSError as exc:
        raise ModelError(f"model file {model_path} cannot be read: {exc}") from None
    if not text.strip():
        raise ModelError(f"model file {model_path} is empty")
    meta = _read_meta(meta_path)
    names = meta.get("feature_names")
    if list(names or []) != list(FEATURE_NAMES):
        raise ModelError(
            f"model {meta_path} was trained on features {names!r}, the engine computes "
            f"{list(FEATURE_NAMES)!r}: refused"
        )
    sha = hashlib.sha256(text).hexdigest()
    expected = meta.get("model_sha256")
    if expected and expected != sha:
        raise ModelError(
            f"model file {model_path} (sha256 {sha[:12]}) does not match its metadata "
            f"(model_sha256 {str(expected)[:12]}): corrupt, or a promotion is half done"
        )
    try:
        booster = lgb.Booster(model_str=text.decode("utf-8"))
    except Exception as exc:  # LightGBMError, UnicodeDecodeError, ValueError...
        raise ModelError(f"model file {model_path} is not a valid LightGBM model: {_short(exc)}") from None
    if list(booster.feature_name()) != list(FEATURE_NAMES):
        raise ModelError(
            f"model file {model_path} has features {booster.feature_name()!r}, the engine computes "
            f"{list(FEATURE_NAMES)!r}: refused"
        )
    model = LoadedModel(path=model_path, name=str(meta["name"]), version=str(meta["version"]),
                        meta=meta, booster=booster, sha256=sha)
    neutral = {name: 0.0 for name in FEATURE_NAMES} | {"rsi": 50.0, "volatility_factor": 1.0,
                                                       "regime_ranging": 1.0}
    try:
        p = model.probability_up(neutral)
    except Exception as exc:
        raise ModelError(f"model file {model_path} cannot predict: {_short(exc)}") from None
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ModelError(f"model file {model_path} predicts {p} on a neutral row, not a probability")
    return model


class ModelRegistry:
    """The current model for the engine, or None (the engine then uses the fallback rule).

    `model_path` None means "fallback only". `current()` re-checks the files at most every
    `check_interval_s` seconds (monotonic clock) and reloads them when they changed.
    """

    def __init__(self, model_path: Path | None, *, check_interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._model: LoadedModel | None = None
        self._signature: tuple | None = None
        self._checked_at: float | None = None
        self.last_error: str | None = None
        self.loads = 0  # successful (re)loads, for tests and metrics
        if self.model_path is None:
            log.info("signal model disabled (model_path none): using the fallback-trend-following rule")

    @property
    def model(self) -> LoadedModel | None:
        """The model in use, without checking the files."""
        return self._model

    def current(self) -> LoadedModel | None:
        """The model in use, after a file check when the last one is `check_interval_s` old."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self.check_interval_s:
            self.refresh()
        return self._model

    def refresh(self) -> LoadedModel | None:
        """Check the files now; reload when they changed since the last check."""
        self._checked_at = self._clock()
        if self.model_path is None:
            return None
        signature = _signature(self.model_path)
        if signature == self._signature:
            return self._model
        self._signature = signature
        try:
            model = load_model(self.model_path)
        except ModelError as exc:
            self._model, self.last_error = None, str(exc)
            log.error("signal model refused, using the fallback-trend-following rule: %s", exc)
            return None
        previous, self._model, self.last_error = self._model, model, None
        self.loads += 1
        validation = (model.meta.get("metrics") or {}).get("validation") or {}
        log.info(
            "signal model %s %s from %s (sha256 %s, trained %s, validation AUC %s)",
            "reloaded" if previous else "loaded", model.label, model.path, model.sha256[:12],
            model.meta.get("trained_at", "?"), validation.get("auc", "?"),
        )
        return model

    def predict(self, vector: Mapping[str, float]) -> tuple[Side, float]:
        """The current model's (side, confidence); `ModelError` when there is no valid model."""
        model = self.current()
        if model is None:
            raise ModelError(self.last_error or "no signal model loaded")
        return model.predict(vector)


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        raw = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"model metadata {meta_path} does not exist (written beside model.txt)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"model metadata {meta_path} cannot be read: {exc}") from None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"model metadata {meta_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"model metadata {meta_path} must be a JSON object")
    missing = [key for key in ("name", "version", "feature_names") if not meta.get(key)]
    if missing:
        raise ModelError(f"model metadata {meta_path} lacks {', '.join(missing)}")
    return meta


def _signature(model_path: Path) -> tuple:
    """What changes when either file is replaced (None for a missing file)."""
    out = []
    for path in (model_path, meta_path_for(model_path)):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]
