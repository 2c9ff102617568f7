"""Persistence of the paper exchange in SQLite (stdlib `sqlite3`, WAL).

A handler that changes anything flushes before it answers, in one transaction, so a SIGKILL
right after a response loses nothing. WAL with `synchronous=NORMAL`: a committed transaction
survives the process being killed; only an OS crash or power loss could drop the last few.

What is not written: replay progress with no event (the path is a pure function of time, so a
restart re-walks from the last flushed point and reaches the same state), trailing-stop
extremes on their own (written with the next flush; re-derived by the re-walk meanwhile), and
the test-only fault injections.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from paper_exchange.engine import Changes, Engine
from paper_exchange.models import AlgoOrder, AuditEvent, Counters, Income, Order, Position, Trade
from paper_exchange.replay import MarketClock

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (order_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS algo_orders (algo_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trades (trade_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS income (tran_id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS client_ids (client_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    market_ms INTEGER NOT NULL,
    wall_ms INTEGER NOT NULL,
    client_id TEXT,
    symbol TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_client_id ON audit (client_id);
CREATE INDEX IF NOT EXISTS audit_symbol ON audit (symbol);
"""

ACCOUNT_TABLES = ("orders", "algo_orders", "positions", "trades", "income", "client_ids", "audit")


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- reading --------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def _rows(self, table: str, key: str, cls):
        query = f"SELECT data FROM {table} ORDER BY {key}"  # noqa: S608 (fixed names)
        return [cls.from_dict(json.loads(data)) for (data,) in self.db.execute(query)]

    def load_into(self, engine: Engine) -> None:
        """Restore the account part of a persisted engine (the caller restores the clock)."""
        meta = self.meta()
        engine.processed_ms = meta["processed_ms"]
        for walker in engine.walkers.values():
            walker.seek(engine.processed_ms)
        engine.restore(
            wallet=Decimal(meta["wallet"]),
            positions=self._rows("positions", "symbol", Position),
            orders=self._rows("orders", "order_id", Order),
            algos=self._rows("algo_orders", "algo_id", AlgoOrder),
            trades=self._rows("trades", "trade_id", Trade),
            income=self._rows("income", "tran_id", Income),
            client_ids={c for (c,) in self.db.execute("SELECT client_id FROM client_ids")},
            leverage=meta.get("leverage", {}),
            pins=meta.get("pins", {}),
            counters=Counters.from_dict(meta.get("counters", {})),
            account_update_ms=meta.get("account_update_ms", engine.processed_ms),
        )

    def audit(self, client_id: str | None = None, symbol: str | None = None,
              limit: int = 10_000) -> list[dict[str, Any]]:
        query, args = "SELECT id, data FROM audit", []
        where = []
        if client_id is not None:
            where.append("client_id = ?")
            args.append(client_id)
        if symbol is not None:
            where.append("symbol = ?")
            args.append(symbol)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [{"id": row_id, **json.loads(data)} for row_id, data in self.db.execute(query, args)]

    # -- writing --------------------------------------------------------------------------------

    def flush(self, engine: Engine, changes: Changes, clock: MarketClock, epoch: int,
              wipe: bool = False) -> None:
        """Write everything `changes` names plus the engine's scalars, in one transaction.

        `wipe` (for `/_paper/reset`) first empties the account tables in the same transaction.
        """
        db = self.db
        db.execute("BEGIN")
        try:
            if wipe:
                for table in ACCOUNT_TABLES:
                    db.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed names)
            meta = {
                "clock": {"anchor_market": clock.anchor_market, "anchor_wall": clock.anchor_wall,
                          "speed": clock.speed},
                "epoch": epoch,
                "processed_ms": engine.processed_ms,
                "wallet": str(engine.wallet),
                "leverage": engine.leverage,
                "pins": engine.pins,
                "counters": engine.counters.to_dict(),
                "account_update_ms": engine.account_update_ms,
            }
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in meta.items()])
            db.executemany(
                "INSERT OR REPLACE INTO orders (order_id, data) VALUES (?, ?)",
                [(i, json.dumps(engine.orders[i].to_dict())) for i in changes.orders
                 if i in engine.orders])
            algo_ids = set(changes.algos)
            # Trailing stops move their extreme without an event: write the open ones each time.
            for book in engine.open_algos.values():
                algo_ids.update(a.algo_id for a in book.values()
                                if a.order_type == "TRAILING_STOP_MARKET")
            db.executemany(
                "INSERT OR REPLACE INTO algo_orders (algo_id, data) VALUES (?, ?)",
                [(i, json.dumps(engine.algos[i].to_dict())) for i in algo_ids
                 if i in engine.algos])
            db.executemany(
                "INSERT OR REPLACE INTO positions (symbol, data) VALUES (?, ?)",
                [(s, json.dumps(engine.positions[s].to_dict())) for s in changes.positions])
            db.executemany("INSERT OR REPLACE INTO trades (trade_id, data) VALUES (?, ?)",
                           [(t.trade_id, json.dumps(t.to_dict())) for t in changes.trades])
            db.executemany("INSERT OR REPLACE INTO income (tran_id, data) VALUES (?, ?)",
                           [(r.tran_id, json.dumps(r.to_dict())) for r in changes.income])
            db.executemany("INSERT OR IGNORE INTO client_ids (client_id) VALUES (?)",
                           [(c,) for c in changes.client_ids])
            db.executemany(
                "INSERT INTO audit (market_ms, wall_ms, client_id, symbol, data) "
                "VALUES (?, ?, ?, ?, ?)",
                [_audit_row(e) for e in changes.audit])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _audit_row(event: AuditEvent) -> tuple:
    data = event.to_dict()
    return (event.market_ms, event.wall_ms, event.client_id or None, event.symbol or None,
            json.dumps(data))
