"""The study store: one SQLite file per study (stdlib ``sqlite3``, WAL, JSON columns, no pickle).

Tables: ``meta`` (format marker, version, settings), ``candidates`` (one row per explored
candidate, keyed by ``(generation, slot)``, committed the moment its result exists) and
``checkpoints`` (strategy state and stage timings after each completed generation). The study
process is the only writer. A file from elsewhere never executes code: everything is JSON.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "lossforge-study"
VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    generation INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    proposed TEXT NOT NULL,
    formula TEXT NOT NULL,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    fitness REAL,
    fingerprint TEXT,
    same_as TEXT,
    details TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (generation, slot)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    generation INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class StudyFileError(ValueError):
    """The file is not a lossforge study, is damaged, or does not match the requested settings."""


@dataclass(frozen=True)
class Row:
    """One explored candidate as stored."""

    id: int
    generation: int
    slot: int
    proposed: str
    formula: str
    size: int
    status: str
    fitness: float | None
    fingerprint: str | None
    same_as: str | None
    details: dict[str, Any]
    created: float


class Store:
    """Read/write access to one study file. Use :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path, self.conn = path, conn

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, settings: dict[str, Any]) -> "Store":
        """A new study file at ``path`` (which must not exist) holding ``settings``."""
        path = Path(path)
        if path.exists():
            raise StudyFileError(f"{path} already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        with conn:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", json.dumps(FORMAT)), ("version", json.dumps(VERSION)),
                ("settings", json.dumps(settings)), ("created", json.dumps(time.time()))])
        return cls(path, conn)

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False) -> "Store":
        """Open an existing study; :class:`StudyFileError` if it is missing, not a study, or damaged."""
        path = Path(path)
        if not path.is_file():
            raise StudyFileError(f"study file {path} does not exist")
        try:
            conn = _connect(path, readonly=readonly)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            conn.execute("SELECT count(*) FROM candidates").fetchone()
            conn.execute("SELECT count(*) FROM checkpoints").fetchone()
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise StudyFileError(f"{path} is not a lossforge study or is damaged ({err}); "
                                 "check the path, or start a new study with another file name") from None
        if json.loads(meta.get("format", "null")) != FORMAT:
            raise StudyFileError(f"{path} is an SQLite file but not a lossforge study")
        if ok != "ok":
            raise StudyFileError(f"{path} is damaged (integrity check: {ok})")
        version = json.loads(meta["version"])
        if version > VERSION:
            raise StudyFileError(f"{path} was written by a newer lossforge (format {version})")
        return cls(path, conn)

    def close(self) -> None:
        self.conn.close()

    # --- meta -----------------------------------------------------------------------------------
    def meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta("settings")

    # --- candidates ---------------------------------------------------------------------------
    def add(self, generation: int, slot: int, proposed: str, formula: str, size: int, status: str,
            fitness: float | None, fingerprint: str | None, same_as: str | None,
            details: dict[str, Any]) -> None:
        """Commit one explored candidate. A second write of the same slot is ignored (idempotent)."""
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO candidates (generation, slot, proposed, formula, size, status,"
                " fitness, fingerprint, same_as, details, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (generation, slot, proposed, formula, size, status, fitness, fingerprint, same_as,
                 json.dumps(_clean(details), allow_nan=False, default=_json_default), time.time()))

    def rows(self, where: str = "", params: tuple = ()) -> list[Row]:
        sql = "SELECT * FROM candidates " + (f"WHERE {where} " if where else "") + "ORDER BY id"
        return [_row(r) for r in self.conn.execute(sql, params).fetchall()]

    def generation_rows(self, generation: int) -> dict[int, Row]:
        return {r.slot: r for r in self.rows("generation = ?", (generation,))}

    def count(self, where: str = "", params: tuple = ()) -> int:
        sql = "SELECT count(*) FROM candidates" + (f" WHERE {where}" if where else "")
        return self.conn.execute(sql, params).fetchone()[0]

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, generation: int, state: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                              (generation, json.dumps(state, default=_json_default), time.time()))

    def last_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        row = self.conn.execute(
            "SELECT generation, state FROM checkpoints ORDER BY generation DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def checkpoints(self) -> list[tuple[int, dict[str, Any]]]:
        rows = self.conn.execute("SELECT generation, state FROM checkpoints ORDER BY generation")
        return [(g, json.loads(s)) for g, s in rows.fetchall()]


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    else:
        conn = sqlite3.connect(str(path), timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _row(r: tuple) -> Row:
    return Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], json.loads(r[10]), r[11])


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _clean(obj):
    """JSON-safe copy: non-finite floats become ``None``."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj
