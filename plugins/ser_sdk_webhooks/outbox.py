"""The durable outbox: one SQLite row per (endpoint, event) until a 2xx removes it.

An event is written (and committed, in WAL mode with full sync) before the
first attempt, so a crash, a stop or a dead receiver loses nothing. A row is
*leased* while an attempt is in flight; the lease expires on its own, so rows
held by a process that died go out again, and two processes sharing the file
(a running engine and ``ser-sdk webhooks flush``) do not send the same row at
once. The body is stored as the exact bytes sent, so every retry carries the
same body and the same event id.

Calls block briefly on SQLite: async callers run them in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from ser_sdk.errors import PluginError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (endpoint, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (endpoint, state, next_attempt_at);
"""

_COLUMNS = (
    "id, endpoint, event_id, event_type, body, state, attempts, next_attempt_at, last_error, created_at"
)


class Delivery(BaseModel):
    """One event waiting for (or given up on by) one endpoint."""

    id: int
    endpoint: str
    event_id: str
    event_type: str
    body: bytes
    state: Literal["pending", "dead"]
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float


class EndpointStats(BaseModel):
    endpoint: str
    pending: int
    dead: int
    oldest_pending_at: float | None
    next_attempt_at: float | None


class Outbox:
    """SQLite-backed queue of webhook deliveries, safe to share between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            raise PluginError(f"cannot open the webhook outbox {self.path}: {exc}") from exc
        self._db = db
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def enqueue(self, event_id: str, event_type: str, body: bytes, endpoints: Iterable[str]) -> int:
        """Queue ``body`` for each endpoint; returns how many rows were new (a known event id is ignored)."""
        now = time.time()
        rows = [(endpoint, event_id, event_type, body, now, now, now) for endpoint in endpoints]
        with self._transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO deliveries "
                "(endpoint, event_id, event_type, body, next_attempt_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return db.total_changes - before

    def claim(self, endpoint: str, limit: int, lease_s: float) -> list[Delivery]:
        """Lease up to ``limit`` due pending deliveries of ``endpoint``, oldest first."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE endpoint = ? AND state = 'pending' "
                "AND next_attempt_at <= ? AND lease_until <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (endpoint, now, now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE deliveries SET lease_until = ? WHERE id = ?",
                [(now + lease_s, row[0]) for row in rows],
            )
        return [_delivery(row) for row in rows]

    def delivered(self, delivery_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def failed(self, delivery_id: int, attempts: int, error: str, next_attempt_at: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET attempts = ?, last_error = ?, next_attempt_at = ?, lease_until = 0, "
                "updated_at = ? WHERE id = ?",
                (attempts, error, next_attempt_at, time.time(), delivery_id),
            )

    def dead(self, delivery_id: int, attempts: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'dead', attempts = ?, last_error = ?, lease_until = 0, "
                "updated_at = ? WHERE id = ?",
                (attempts, error, time.time(), delivery_id),
            )

    def release(self, delivery_ids: Iterable[int]) -> None:
        """Give leases back without counting an attempt (the attempt was interrupted, not failed)."""
        with self._transaction() as db:
            db.executemany("UPDATE deliveries SET lease_until = 0 WHERE id = ?", [(i,) for i in delivery_ids])

    def make_due(self, endpoints: Iterable[str] | None = None) -> int:
        """Bring every pending delivery's next attempt forward to now (on start and on flush)."""
        now = time.time()
        with self._transaction() as db:
            if endpoints is None:
                cursor = db.execute(
                    "UPDATE deliveries SET next_attempt_at = ? "
                    "WHERE state = 'pending' AND next_attempt_at > ?",
                    (now, now),
                )
                return cursor.rowcount
            total = 0
            for endpoint in endpoints:
                cursor = db.execute(
                    "UPDATE deliveries SET next_attempt_at = ? "
                    "WHERE endpoint = ? AND state = 'pending' AND next_attempt_at > ?",
                    (now, endpoint, now),
                )
                total += cursor.rowcount
            return total

    def requeue_dead(self, endpoint: str | None = None) -> int:
        """Turn dead deliveries back into pending ones with a fresh attempt count."""
        now = time.time()
        with self._transaction() as db:
            query = (
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
                "WHERE state = 'dead'"
            )
            params: tuple[object, ...] = (now, now)
            if endpoint is not None:
                query += " AND endpoint = ?"
                params += (endpoint,)
            return db.execute(query, params).rowcount

    def next_due(self, endpoint: str) -> float | None:
        """Unix time when ``endpoint``'s next pending delivery may be attempted (``None``: none pending)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(MAX(next_attempt_at, lease_until)) FROM deliveries "
                "WHERE endpoint = ? AND state = 'pending'",
                (endpoint,),
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def earliest_attempt(self, endpoints: Iterable[str]) -> float | None:
        """The earliest scheduled attempt among pending deliveries, leased ones included (in flight = due)."""
        keys = list(endpoints)
        marks = ",".join("?" * len(keys))
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries "
                f"WHERE state = 'pending' AND endpoint IN ({marks})",
                keys,
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def pending_count(self, endpoints: Iterable[str] | None = None) -> int:
        with self._lock:
            if endpoints is None:
                row = self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()
            else:
                keys = list(endpoints)
                marks = ",".join("?" * len(keys))
                row = self._db.execute(
                    f"SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND endpoint IN ({marks})", keys
                ).fetchone()
        return int(row[0])

    def stats(self) -> list[EndpointStats]:
        with self._lock:
            rows = self._db.execute(
                "SELECT endpoint, SUM(state = 'pending'), SUM(state = 'dead'), "
                "MIN(CASE WHEN state = 'pending' THEN created_at END), "
                "MIN(CASE WHEN state = 'pending' THEN next_attempt_at END) "
                "FROM deliveries GROUP BY endpoint ORDER BY endpoint"
            ).fetchall()
        return [
            EndpointStats(
                endpoint=row[0], pending=row[1], dead=row[2], oldest_pending_at=row[3], next_attempt_at=row[4]
            )
            for row in rows
        ]

    def deliveries(self, state: Literal["pending", "dead"], limit: int = 100) -> list[Delivery]:
        """Deliveries in ``state``, most recently updated first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE state = ? "
                "ORDER BY updated_at DESC, id DESC LIMIT ?",
                (state, limit),
            ).fetchall()
        return [_delivery(row) for row in rows]


def _delivery(row: tuple) -> Delivery:
    return Delivery(
        id=row[0],
        endpoint=row[1],
        event_id=row[2],
        event_type=row[3],
        body=bytes(row[4]),
        state=row[5],
        attempts=row[6],
        next_attempt_at=row[7],
        last_error=row[8],
        created_at=row[9],
    )
