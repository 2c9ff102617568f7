"""Offline training of the signal engine's LightGBM model on the shipped candles.

    python -m signals_ingest.train_model --out models/signal_lgbm

Dataset: every `*-5m.csv` under `paper_exchange/data/ohlcv/` (real 5-minute candles; see its
README for attribution). One sample per candle close `t` with a full 48-candle window (the
window the engine and the trade workflow use): the features are `trading.features.
compute_features` of that window turned into `trading.signal_rules.feature_vector`, exactly as
the engine computes them live. `funding_rate` is the last published rate at `t` from
`{SYMBOL}-8h-funding.csv` when the series has one (XRPUSDT), else 0; `exchange_divergence` is 0
(one venue).

Label: the direction of the forward log return over the next 12 candles (1 hour), ln(close[t+12]
/ close[t]): 1 (up) above +0.2 %, 0 (down) below -0.2 %; moves within ±0.2 % are dropped. 0.2 %
is about 2.5× a round trip's taker fees (2 × 0.04 %) with some slippage: a move smaller than that
is not worth a trade in either direction, and labelling it is noise. Samples whose 12 candles
ahead are not exactly one hour ahead (a gap in the file) are dropped too, and so are samples whose
window spans more than 12 missing candles (the engine restarts its window after such a gap).

Split, time-ordered per series (never shuffled across time): the first 70 % of each file's
candles is the training period, the rest validation. A training sample must have its whole label
horizon before the cut; validation samples are decided at or after the cut; the samples in between
(decided before, labelled after) are dropped, so no label overlaps the two. Early stopping uses
the same split again *inside* the training period (its last 20 %), then the model is refit on the
whole training period with that many trees: the validation period is never seen in training or
model selection.

Model: LightGBM binary classifier, deterministic (fixed seed, `deterministic=True`, col-wise,
2 threads). The engine reads P(up): BUY with confidence p when p >= 0.5, else SELL with 1 - p.

Reported on the validation period: AUC, log loss, accuracy; baselines on the same samples:
"always the training period's majority class" (accuracy) and the rule-based fallback (hit rate
where it fires, and how often it fires); the model's hit rate and coverage at a few confidence
thresholds, and how many intents per symbol-day the engine would publish at each (with the
default 15-minute cooldown) over the validation candles and over a replay of the whole files.

Artifacts: `model.txt` (LightGBM text model) and `model.json` (metadata: name, version, feature
names, label, per-series train/validation ranges, metrics, parameters, sha256 of model.txt,
trained_at), each written atomically (temp file + rename), model.txt first: the registry checks
the sha256, so a reader between the two renames refuses the pair until model.json lands.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from pydantic import BaseModel

from trading.features import CANDLE_MS, Candle, compute_features
from trading.models import Side
from trading.signal_rules import (
    FEATURE_NAMES,
    MAX_GAP_CANDLES,
    fallback_signal,
    feature_vector,
    vector_values,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT / "paper_exchange" / "data" / "ohlcv"
DEFAULT_OUT_DIR = ROOT / "models" / "signal_lgbm"
MODEL_FILE, META_FILE = "model.txt", "model.json"

WINDOW = 48
HORIZON = 12  # candles ahead (1 hour of 5m candles)
MIN_MOVE = 0.002  # |forward log return| below this is dropped (fees, see the docstring)
TRAIN_FRACTION = 0.7
INNER_FRACTION = 0.8  # early stopping: the last 20 % of the training period
MODEL_NAME, MODEL_VERSION = "lgbm-signal", "v1"
SEED = 42
MAX_ROUNDS, EARLY_STOPPING = 400, 40
# What the report evaluates the confidence thresholds at; the engine's default threshold and
# cooldown (signal_settings.py) are the ones `intents_per_symbol_day` simulates.
REPORT_THRESHOLDS = (0.55, 0.6, 0.62, 0.65, 0.68, 0.7)
REPORT_COOLDOWN_MS = 900_000

PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.03,
    "num_leaves": 15,
    "max_depth": 5,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": SEED,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": 2,
    "verbosity": -1,
}


class SeriesRange(BaseModel):
    """One series' part of the split: its time range (candle close times, ISO UTC) and size."""

    first: str | None
    last: str | None
    samples: int
    up_rate: float | None = None


class SeriesReport(BaseModel):
    name: str
    file: str
    sha256: str
    candles: int
    cut: str  # open time of the first validation candle (ISO UTC)
    train: SeriesRange
    validation: SeriesRange
    dropped_flat: int
    dropped_embargo: int


class TrainReport(BaseModel):
    """What `train_and_save` did and how good the result is (also stored in model.json)."""

    name: str
    version: str
    model: str  # f"{name}-{version}": what the engine writes in the intent's `model` field
    model_path: str
    meta_path: str
    feature_names: list[str]
    label: dict[str, Any]
    split: dict[str, Any]
    series: list[SeriesReport]
    train_samples: int
    validation_samples: int
    num_trees: int
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    thresholds: list[dict[str, Any]]
    params: dict[str, Any]
    trained_at: str
    lightgbm_version: str
    model_sha256: str
    seconds: float

    def text(self) -> str:
        """A readable summary (what `main` prints)."""
        m, b = self.metrics["validation"], self.baselines
        lines = [
            f"{self.model}: {self.num_trees} trees, {len(self.feature_names)} features, "
            f"trained in {self.seconds:.1f} s -> {self.model_path}",
            f"label: {self.label['definition']}",
            f"split: {self.split['method']}",
            f"samples: train {self.train_samples}, validation {self.validation_samples}",
        ]
        for s in self.series:
            lines.append(
                f"  {s.name:<8} train {s.train.first} .. {s.train.last} ({s.train.samples})"
                f"  | validation {s.validation.first} .. {s.validation.last} ({s.validation.samples})"
            )
        lines += [
            "validation (later part of every series):",
            f"  model     AUC {m['auc']:.4f}  log loss {m['log_loss']:.4f}  accuracy {m['accuracy']:.4f}"
            f"  (up rate {m['up_rate']:.3f})",
            f"  majority  accuracy {b['majority_class']['accuracy']:.4f} "
            f"(always {b['majority_class']['side']}, the training period's majority)"
            f"  log loss of the training base rate {b['base_rate']['log_loss']:.4f}",
            f"  fallback  hit rate {_fmt(b['fallback_rule']['hit_rate'])} where it fires "
            f"({b['fallback_rule']['fires']} samples, {b['fallback_rule']['coverage']:.1%} of validation)",
            "  model by confidence threshold (hit rate where confidence >= threshold):",
        ]
        for row in self.thresholds:
            lines.append(
                f"    >= {row['threshold']:.2f}: hit rate {_fmt(row['hit_rate'])} on {row['samples']} samples "
                f"({row['coverage']:.1%}); intents/symbol-day ({REPORT_COOLDOWN_MS // 60000} min cooldown) "
                f"{row['intents_per_symbol_day']:.1f} on validation, {row['intents_per_symbol_day_replay']:.1f} "
                f"over the whole replay"
            )
        return "\n".join(lines)


@dataclass
class _Series:
    name: str
    path: Path
    bars: list[Candle]
    funding: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class _Samples:
    """Dataset rows with their series and decision time (candle close, ms)."""

    x: list[list[float]] = field(default_factory=list)
    y: list[int] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    time_ms: list[int] = field(default_factory=list)
    fallback: list[int] = field(default_factory=list)  # +1 BUY, -1 SELL, 0 no trade

    def add(self, other: _Samples, index: int) -> None:
        self.x.append(other.x[index])
        self.y.append(other.y[index])
        self.series.append(other.series[index])
        self.time_ms.append(other.time_ms[index])
        self.fallback.append(other.fallback[index])

    def __len__(self) -> int:
        return len(self.y)


def train_and_save(
    out_dir: Path = DEFAULT_OUT_DIR,
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    name: str = MODEL_NAME,
    version: str = MODEL_VERSION,
    series: Sequence[str] | None = None,
    max_rows: int | None = None,
    train_fraction: float = TRAIN_FRACTION,
    horizon: int = HORIZON,
    min_move: float = MIN_MOVE,
    window: int = WINDOW,
    params: dict[str, Any] | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> TrainReport:
    """Build the dataset from the CSVs, train with a time-ordered split, write model.txt and
    model.json into `out_dir`, return the report. `series` limits the files (names such as
    "ADABTC"), `max_rows` the candles read per file (a quick run for tests)."""
    started = time.monotonic()
    if not 0.1 <= train_fraction <= 0.9:
        raise ValueError("train_fraction must be in [0.1, 0.9]")
    loaded = load_series(Path(data_dir), series, max_rows)
    if not loaded:
        raise ValueError(f"no *-5m.csv candle files found under {data_dir}")
    params = {**PARAMS, **(params or {})}

    train, valid, reports, per_series_valid = _Samples(), _Samples(), [], {}
    for s in loaded:
        samples, flat = build_samples(s, window=window, horizon=horizon, min_move=min_move)
        cut_index = int(len(s.bars) * train_fraction)
        cut_ms = s.bars[cut_index].open_ms
        tr, va, embargo = split_by_time(samples, cut_ms, horizon)
        for i in tr:
            train.add(samples, i)
        for i in va:
            valid.add(samples, i)
        per_series_valid[s.name] = (_candle_rows(s, window), cut_ms)
        reports.append(SeriesReport(
            name=s.name, file=s.path.name, sha256=_sha256(s.path.read_bytes()), candles=len(s.bars),
            cut=_iso(cut_ms), train=_range(samples, tr), validation=_range(samples, va),
            dropped_flat=flat, dropped_embargo=embargo,
        ))
    if len(train) < 50 or len(valid) < 10:
        raise ValueError(f"too few samples to train: {len(train)} train, {len(valid)} validation")

    num_trees = _early_stopping_rounds(train, train_fraction=INNER_FRACTION, horizon=horizon,
                                       params=params, max_rounds=max_rounds)
    booster = lgb.train(params, _dataset(train), num_boost_round=num_trees)

    p_valid = booster.predict(np.asarray(valid.x, dtype=np.float64))
    y_valid = np.asarray(valid.y, dtype=np.float64)
    y_train = np.asarray(train.y, dtype=np.float64)
    metrics = {"validation": {**classification_metrics(y_valid, p_valid), "samples": len(valid)}}
    baselines = _baselines(y_train, y_valid, valid.fallback)
    thresholds = _threshold_table(booster, y_valid, p_valid, per_series_valid)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_text = booster.model_to_string(num_iteration=-1)
    sha = _sha256(model_text.encode())
    report = TrainReport(
        name=name, version=version, model=f"{name}-{version}",
        model_path=str(out_dir / MODEL_FILE), meta_path=str(out_dir / META_FILE),
        feature_names=list(FEATURE_NAMES),
        label={
            "definition": f"1 if ln(close[t+{horizon}] / close[t]) > {min_move} (up), 0 if < -{min_move} "
                          f"(down); smaller moves and horizons across a gap dropped",
            "horizon_candles": horizon, "interval": "5m", "min_move": min_move, "positive": "up",
        },
        split={
            "method": f"time-ordered per series: first {train_fraction:.0%} of each file's candles train, "
                      f"the rest validation; training labels end before the cut (embargo {horizon} "
                      f"candles); early stopping on the last {1 - INNER_FRACTION:.0%} of the training "
                      f"period, then refit on the whole training period",
            "train_fraction": train_fraction, "inner_fraction": INNER_FRACTION, "window": window,
        },
        series=reports, train_samples=len(train), validation_samples=len(valid), num_trees=num_trees,
        metrics=metrics, baselines=baselines, thresholds=thresholds,
        params={k: v for k, v in params.items()}, trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        lightgbm_version=lgb.__version__, model_sha256=sha, seconds=round(time.monotonic() - started, 2),
    )
    _write_atomic(out_dir / MODEL_FILE, model_text)
    meta = {
        "format": 1,
        **report.model_dump(exclude={"model_path", "meta_path", "seconds"}),
        "confidence": "P(up) from the model: BUY with confidence p when p >= 0.5, else SELL with 1 - p",
        "train_range": _overall(reports, "train"),
        "validation_range": _overall(reports, "validation"),
    }
    _write_atomic(out_dir / META_FILE, json.dumps(meta, indent=1, sort_keys=False) + "\n")
    return report


# --- dataset --------------------------------------------------------------------------------


def load_series(data_dir: Path, names: Sequence[str] | None = None, max_rows: int | None = None) -> list[_Series]:
    """The `*-5m.csv` files (sorted by name), with the matching `*-8h-funding.csv` if present."""
    wanted = {n.upper() for n in names} if names else None
    out = []
    for path in sorted(data_dir.glob("*-5m.csv")):
        series_name = path.name.removesuffix("-5m.csv")
        if wanted is not None and series_name.upper() not in wanted:
            continue
        bars = read_bars(path, max_rows)
        funding_path = data_dir / f"{series_name}-8h-funding.csv"
        funding = read_funding(funding_path) if funding_path.exists() else []
        out.append(_Series(series_name, path, bars, funding))
    return out


def read_bars(path: Path, max_rows: int | None = None) -> list[Candle]:
    """`timestamp_ms,open,high,low,close,volume` rows as Bars (exact Decimals), oldest first."""
    bars: list[Candle] = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            if not row:
                continue
            bars.append(Candle(int(row[0]), *(Decimal(v) for v in row[1:6])))
            if max_rows is not None and len(bars) >= max_rows:
                break
    bars.sort(key=lambda b: b.open_ms)
    return bars


def read_funding(path: Path) -> list[tuple[int, float]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return sorted((int(r[0]), float(r[1])) for r in reader if r)


def funding_at(funding: Sequence[tuple[int, float]], t_ms: int) -> float:
    """The last funding rate published at or before `t_ms` (0.0 before the first)."""
    rate = 0.0
    for ts, value in funding:
        if ts > t_ms:
            break
        rate = value
    return rate


def build_samples(s: _Series, *, window: int = WINDOW, horizon: int = HORIZON,
                  min_move: float = MIN_MOVE) -> tuple[_Samples, int]:
    """One sample per candle with a full window and a clean label; returns (samples, dropped flat)."""
    out, flat = _Samples(), 0
    bars = s.bars
    for i in range(window - 1, len(bars) - horizon):
        ahead = bars[i + horizon]
        if ahead.open_ms != bars[i].open_ms + horizon * CANDLE_MS:
            continue  # a gap inside the horizon: not a one-hour label
        now, later = float(bars[i].close), float(ahead.close)
        if not (now > 0 and later > 0):
            continue
        move = math.log(later / now)
        if abs(move) <= min_move:
            flat += 1
            continue
        if _spans_gap(bars, i - window + 1, i):
            continue  # the engine restarts its window after such a gap: no such sample live
        features = compute_features(bars[i - window + 1:i + 1])
        if features is None:
            continue
        close_ms = bars[i].open_ms + CANDLE_MS - 1
        vector = feature_vector(features, funding_at(s.funding, close_ms), 0.0)
        fb = fallback_signal(features)
        out.x.append(vector_values(vector))
        out.y.append(1 if move > 0 else 0)
        out.series.append(s.name)
        out.time_ms.append(close_ms)
        out.fallback.append(0 if fb.side is None else fb.side.sign)
    return out, flat


def _spans_gap(bars: Sequence[Candle], first: int, last: int) -> bool:
    """More than MAX_GAP_CANDLES missing between two neighbours of bars[first..last]?"""
    limit = (MAX_GAP_CANDLES + 1) * CANDLE_MS
    return any(bars[j + 1].open_ms - bars[j].open_ms > limit for j in range(first, last))


def split_by_time(samples: _Samples, cut_ms: int, horizon: int) -> tuple[list[int], list[int], int]:
    """Indices of training samples (label horizon ends before `cut_ms`), validation samples
    (decided at or after `cut_ms`) and how many fell in between (dropped)."""
    train, valid, embargo = [], [], 0
    horizon_ms = horizon * CANDLE_MS
    for i, t in enumerate(samples.time_ms):
        if t + horizon_ms < cut_ms:
            train.append(i)
        elif t >= cut_ms:
            valid.append(i)
        else:
            embargo += 1
    return train, valid, embargo


def _candle_rows(s: _Series, window: int) -> list[list[float]]:
    """[close_ms, *features] of *every* candle with a full window (labelled or not): what the
    engine would evaluate on a replay of the file, for the intents-per-day estimate."""
    rows = []
    for i in range(window - 1, len(s.bars)):
        if _spans_gap(s.bars, i - window + 1, i):
            continue
        features = compute_features(s.bars[i - window + 1:i + 1])
        if features is not None:
            close_ms = s.bars[i].open_ms + CANDLE_MS - 1
            rows.append([float(close_ms), *vector_values(feature_vector(features, funding_at(s.funding, close_ms)))])
    return rows


# --- training -------------------------------------------------------------------------------


def _dataset(samples: _Samples) -> lgb.Dataset:
    return lgb.Dataset(
        np.asarray(samples.x, dtype=np.float64), label=np.asarray(samples.y, dtype=np.float64),
        feature_name=list(FEATURE_NAMES), free_raw_data=False,
        params={"verbosity": -1, "seed": SEED, "deterministic": True},
    )


def _early_stopping_rounds(train: _Samples, *, train_fraction: float, horizon: int,
                           params: dict[str, Any], max_rounds: int) -> int:
    """Trees to use: early stopping on a time-ordered split *inside* the training period."""
    inner_train, inner_valid = _Samples(), _Samples()
    for name in sorted(set(train.series)):
        idx = [i for i, s in enumerate(train.series) if s == name]
        times = [train.time_ms[i] for i in idx]
        cut = times[min(len(times) - 1, int(len(times) * train_fraction))]
        for i in idx:
            t = train.time_ms[i]
            if t + horizon * CANDLE_MS < cut:
                inner_train.add(train, i)
            elif t >= cut:
                inner_valid.add(train, i)
    if len(inner_train) < 20 or len(inner_valid) < 10 or len(set(inner_valid.y)) < 2:
        return max(10, min(max_rounds, 50))
    dtrain = _dataset(inner_train)
    dvalid = lgb.Dataset(np.asarray(inner_valid.x, dtype=np.float64), label=np.asarray(inner_valid.y, dtype=np.float64),
                         reference=dtrain, feature_name=list(FEATURE_NAMES))
    booster = lgb.train(params, dtrain, num_boost_round=max_rounds, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)])
    return max(10, int(booster.best_iteration or max_rounds))


# --- metrics --------------------------------------------------------------------------------


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC (rank statistic, ties averaged), log loss (p clipped to [1e-7, 1 - 1e-7]), accuracy at
    0.5, and the share of positives."""
    return {
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))) if len(y) else float("nan"),
        "up_rate": float(np.mean(y)) if len(y) else float("nan"),
    }


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    pos, neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    i = 0
    while i < len(p):  # average ranks over ties
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((np.sum(ranks[y == 1]) - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if not len(y):
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _baselines(y_train: np.ndarray, y_valid: np.ndarray, fallback: Sequence[int]) -> dict[str, Any]:
    up_train = float(np.mean(y_train))
    majority = 1 if up_train >= 0.5 else 0
    fb = np.asarray(fallback)
    fires = fb != 0
    hits = int(np.sum((fb[fires] > 0) == (y_valid[fires] == 1)))
    return {
        "majority_class": {
            "side": Side.BUY.value if majority else Side.SELL.value,
            "accuracy": float(np.mean(y_valid == majority)),
        },
        "base_rate": {"p_up": up_train, "log_loss": log_loss(y_valid, np.full(len(y_valid), up_train))},
        "fallback_rule": {
            "fires": int(np.sum(fires)),
            "coverage": float(np.mean(fires)) if len(fb) else 0.0,
            "hit_rate": hits / int(np.sum(fires)) if np.any(fires) else None,
        },
    }


def _threshold_table(booster: lgb.Booster, y: np.ndarray, p: np.ndarray,
                     per_series: dict[str, tuple[list[list[float]], int]]) -> list[dict[str, Any]]:
    """Per threshold: the model's hit rate on the validation samples it is that confident about,
    and the intents per symbol-day the engine would publish (threshold + cooldown) over the
    validation candles and over the whole replay of the files."""
    conf = np.maximum(p, 1 - p)
    correct = (p >= 0.5) == (y == 1)
    everything: list[tuple[np.ndarray, np.ndarray]] = []
    later: list[tuple[np.ndarray, np.ndarray]] = []
    for rows, cut_ms in per_series.values():
        if not rows:
            continue
        a = np.asarray(rows, dtype=np.float64)
        q = booster.predict(a[:, 1:])
        c, t = np.maximum(q, 1 - q), a[:, 0]
        everything.append((c, t))
        if np.any(t >= cut_ms):
            later.append((c[t >= cut_ms], t[t >= cut_ms]))

    def per_day(parts: list[tuple[np.ndarray, np.ndarray]], threshold: float) -> float:
        days = sum((t[-1] - t[0] + CANDLE_MS) / 86_400_000 for _, t in parts if len(t))
        intents = sum(_count_with_cooldown(c, t, threshold, REPORT_COOLDOWN_MS) for c, t in parts)
        return intents / days if days else 0.0

    out = []
    for threshold in REPORT_THRESHOLDS:
        chosen = conf >= threshold
        out.append({
            "threshold": threshold,
            "samples": int(np.sum(chosen)),
            "coverage": float(np.mean(chosen)) if len(chosen) else 0.0,
            "hit_rate": float(np.mean(correct[chosen])) if np.any(chosen) else None,
            "intents_per_symbol_day": per_day(later, threshold),
            "intents_per_symbol_day_replay": per_day(everything, threshold),
        })
    return out


def _count_with_cooldown(conf: np.ndarray, close_ms: np.ndarray, threshold: float, cooldown_ms: int) -> int:
    """Intents the engine would publish: confidence >= threshold, at most one per cooldown."""
    count, last = 0, None
    for c, t in zip(conf, close_ms):
        if c >= threshold and (last is None or t - last >= cooldown_ms):
            count, last = count + 1, t
    return count


# --- helpers --------------------------------------------------------------------------------


def _range(samples: _Samples, idx: list[int]) -> SeriesRange:
    if not idx:
        return SeriesRange(first=None, last=None, samples=0)
    times = [samples.time_ms[i] for i in idx]
    return SeriesRange(first=_iso(min(times)), last=_iso(max(times)), samples=len(idx),
                       up_rate=round(sum(samples.y[i] for i in idx) / len(idx), 4))


def _overall(reports: list[SeriesReport], part: str) -> list[dict[str, Any]]:
    """Per-period union (the 2018 series share one period, XRPUSDT has its own)."""
    return [{"series": r.name, **getattr(r, part).model_dump()} for r in reports]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the artifact is shared and committed
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the signal engine's LightGBM model on the shipped candles.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="directory for model.txt / model.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="directory of *-5m.csv candle files")
    parser.add_argument("--version", default=MODEL_VERSION, help="model version (model name: lgbm-signal-VERSION)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = train_and_save(args.out, args.data, version=args.version)
    print(report.model_dump_json(indent=1) if args.json else report.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
