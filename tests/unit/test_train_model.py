"""Offline training on a small slice of the shipped candles: the split is time-ordered, the
metrics are finite, the artifacts load through the registry, training is deterministic; and the
shipped model is the one its metadata describes."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime

import pytest

from signals_ingest.model_registry import ModelRegistry
from signals_ingest.signal_settings import DEFAULT_MODEL_PATH
from signals_ingest.train_model import (
    CANDLE_MS,
    DEFAULT_DATA_DIR,
    HORIZON,
    build_samples,
    load_series,
    roc_auc,
    split_by_time,
    train_and_save,
)
from trading.models import Side
from trading.signal_rules import FEATURE_NAMES

SMALL = dict(series=["ETHBTC", "XRPUSDT"], max_rows=700, params={"min_data_in_leaf": 20}, max_rounds=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return out, train_and_save(out, version="vtest", **SMALL)


def test_split_is_time_ordered_per_series():
    for series in load_series(DEFAULT_DATA_DIR, ["ETHBTC", "XRPUSDT"], max_rows=700):
        samples, _flat = build_samples(series)
        assert samples.time_ms == sorted(samples.time_ms)
        cut_ms = series.bars[int(len(series.bars) * 0.7)].open_ms
        train, valid, embargo = split_by_time(samples, cut_ms, HORIZON)
        assert train and valid and embargo > 0
        last_train_label_end = max(samples.time_ms[i] for i in train) + HORIZON * CANDLE_MS
        assert last_train_label_end < cut_ms <= min(samples.time_ms[i] for i in valid)
        assert set(train).isdisjoint(valid)


def test_report_ranges_are_time_ordered_and_metrics_finite(trained):
    out, report = trained
    assert report.model == "lgbm-signal-vtest" and report.feature_names == list(FEATURE_NAMES)
    assert {s.name for s in report.series} == {"ETHBTC", "XRPUSDT"}
    for s in report.series:
        assert datetime.fromisoformat(s.train.last) < datetime.fromisoformat(s.cut) <= datetime.fromisoformat(
            s.validation.first)
        assert s.train.samples > 0 and s.validation.samples > 0
    m = report.metrics["validation"]
    for name in ("auc", "log_loss", "accuracy", "up_rate"):
        assert math.isfinite(m[name]), name
    assert 0 <= m["auc"] <= 1 and 0 <= m["accuracy"] <= 1 and m["log_loss"] > 0
    assert 0 <= report.baselines["majority_class"]["accuracy"] <= 1
    assert report.baselines["majority_class"]["side"] in ("BUY", "SELL")
    assert report.baselines["fallback_rule"]["fires"] >= 0
    assert [row["threshold"] for row in report.thresholds] == sorted(row["threshold"] for row in report.thresholds)
    assert "AUC" in report.text()


def test_artifacts_load_through_the_registry(trained):
    out, report = trained
    meta = json.loads((out / "model.json").read_text())
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["version"] == "vtest"
    assert meta["model_sha256"] == hashlib.sha256((out / "model.txt").read_bytes()).hexdigest()
    assert meta["train_range"] and meta["validation_range"] and meta["trained_at"]
    model = ModelRegistry(out / "model.txt").current()
    assert model is not None and model.label == "lgbm-signal-vtest" and model.version == "vtest"
    vector = {name: 0.0 for name in FEATURE_NAMES} | {"rsi": 70.0, "regime_trending_up": 1.0}
    side, confidence = model.predict(vector)
    assert side in (Side.BUY, Side.SELL) and 0.5 <= confidence <= 1


def test_training_is_deterministic(trained, tmp_path):
    out, _report = trained
    train_and_save(tmp_path, version="vtest", **SMALL)
    assert (tmp_path / "model.txt").read_bytes() == (out / "model.txt").read_bytes()


def test_auc_matches_its_definition():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_the_shipped_model_matches_its_metadata():
    meta_path = DEFAULT_MODEL_PATH.with_suffix(".json")
    assert DEFAULT_MODEL_PATH.stat().st_size < 1_000_000 and meta_path.stat().st_size < 100_000
    meta = json.loads(meta_path.read_text())
    assert meta["model"] == "lgbm-signal-v1" and meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["model_sha256"] == hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    validation = meta["metrics"]["validation"]
    assert validation["auc"] > 0.5 and validation["samples"] > 1000
    assert ModelRegistry(DEFAULT_MODEL_PATH).current() is not None
