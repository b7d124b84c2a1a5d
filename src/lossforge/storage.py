"""The study store: one SQLite file per study (stdlib ``sqlite3``, WAL, JSON columns, no pickle).

Tables: ``meta`` (format marker, version, settings), ``candidates`` (one row per explored
candidate, keyed by ``(generation, position)``, committed the moment its result exists),
``checkpoints`` (strategy state and stage timings after each completed generation) and ``rungs``
(multi-fidelity proxy training: one row per finished rung of a candidate, keyed by
``(generation, position, rung)``, committed the moment the rung's training returns; study files
written before it existed open unchanged — a writable open adds the empty table, a read-only one
reads no rungs). A file from elsewhere never executes code: everything is JSON.

Contract (as Optuna's ``BaseStorage``): all SQL of the package lives in this module; callers use
:class:`Store`'s methods, each documented with what it returns and when it commits.

* **Writes commit at once**: every writing method runs in its own transaction, committed before it
  returns; a crash loses at most the write in progress.
* **One writer process**: the study process is the only writer; a :class:`Store` object is not
  shared between threads (``sqlite3`` connections are not). **Readers** (``show``, report, live
  view) may open the same file concurrently with ``readonly=True`` (WAL mode: they see the last
  committed state and never block the writer).
* **Positions**: a candidate's index within its generation is its *position* (the SQLite column
  keeps its historical name ``slot``: study files of every version open unchanged).
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
""" + """
CREATE TABLE IF NOT EXISTS rungs (
    generation INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    rung INTEGER NOT NULL,
    bracket INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    formula TEXT NOT NULL,
    status TEXT NOT NULL,
    fitness REAL,
    metrics TEXT NOT NULL,
    seconds REAL NOT NULL,
    details TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (generation, slot, rung)
);
"""
_RUNGS_SCHEMA = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS rungs"):]
#: The transfer panel (:mod:`lossforge.transfer`): one row per finished (setting, loss, seed)
#: training; added to older study files by a writable open, as ``rungs`` is.
_PANEL_SCHEMA = """
CREATE TABLE IF NOT EXISTS panel_runs (
    setting TEXT NOT NULL,
    loss TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (setting, loss, seed)
);
"""


class StudyFileError(ValueError):
    """The file is not a lossforge study, is damaged, or does not match the requested settings."""


@dataclass(frozen=True)
class Row:
    """One explored candidate as stored: ``position`` is its index within its ``generation``;
    ``id`` orders the rows as they were committed."""

    id: int
    generation: int
    position: int
    proposed: str
    formula: str
    size: int
    status: str
    fitness: float | None
    fingerprint: str | None
    same_as: str | None
    details: dict[str, Any]
    created: float


@dataclass(frozen=True)
class RungRow:
    """One finished rung of a candidate (multi-fidelity): the candidate's ``(generation,
    position)``, the rung index within its ``bracket``, the rung's ``steps``, the outcome
    (``status``, ``fitness`` — higher is better —, ``metrics``), the ``seconds`` this rung's
    training took, and ``details`` (``started_at``: the step it continued from; ``restart``:
    retrained from scratch because the task's own loop cannot continue)."""

    generation: int
    position: int
    rung: int
    bracket: int
    steps: int
    formula: str
    status: str
    fitness: float | None
    metrics: dict[str, float]
    seconds: float
    details: dict[str, Any]
    created: float


class Store:
    """Read/write access to one study file. Use :meth:`create` or :meth:`open`.

    Not thread-safe: one ``Store`` per thread; one writing process per file (see the module
    docstring)."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path, self._conn = path, conn

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, settings: dict[str, Any]) -> "Store":
        """A new study file at ``path`` (which must not exist: :class:`StudyFileError`) holding
        ``settings``; parent folders are created. Committed before it returns."""
        path = Path(path)
        if path.exists():
            raise StudyFileError(f"{path} already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        with conn:
            conn.executescript(_SCHEMA + _PANEL_SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", json.dumps(FORMAT)), ("version", json.dumps(VERSION)),
                ("settings", json.dumps(settings)), ("created", json.dumps(time.time()))])
        return cls(path, conn)

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False) -> "Store":
        """Open an existing study; :class:`StudyFileError` if it is missing, not a study, damaged,
        or written by a newer lossforge. ``readonly=True``: a read-only connection (for readers
        beside a running search; writing methods then raise ``sqlite3.OperationalError``)."""
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
        if not readonly:  # a study file from before the rungs table: add it (empty)
            with conn:
                conn.executescript(_RUNGS_SCHEMA + _PANEL_SCHEMA)
        return cls(path, conn)

    def close(self) -> None:
        """Close the connection (everything written is already committed)."""
        self._conn.close()

    # --- meta -----------------------------------------------------------------------------------
    def meta(self, key: str) -> Any:
        """The JSON value stored under ``key``, or ``None`` when there is none."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store the JSON-serialisable ``value`` under ``key``, replacing any earlier value.
        Committed before it returns; writing the same value twice is harmless."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               (key, json.dumps(value)))

    @property
    def settings(self) -> dict[str, Any]:
        """The study's settings (meta ``"settings"``), as the search stored them."""
        return self.meta("settings")

    # --- candidates ---------------------------------------------------------------------------
    def add(self, generation: int, position: int, proposed: str, formula: str, size: int,
            status: str, fitness: float | None, fingerprint: str | None, same_as: str | None,
            details: dict[str, Any]) -> None:
        """Commit one explored candidate at ``(generation, position)``; committed before it
        returns. Idempotent: a second write of the same position is ignored (the first result
        stays), so a resumed generation may re-commit what it already stored. ``details`` is
        stored as JSON with non-finite floats as ``null``."""
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO candidates (generation, slot, proposed, formula, size, status,"
                " fitness, fingerprint, same_as, details, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (generation, position, proposed, formula, size, status, fitness, fingerprint,
                 same_as, json.dumps(json_safe(details), allow_nan=False, default=_json_default),
                 time.time()))

    def rows(self, status: str | None = None, with_fitness: bool = False) -> list[Row]:
        """The stored candidates in commit order; only those with ``status`` when given, and only
        those with a fitness when ``with_fitness``."""
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if with_fitness:
            where.append("fitness IS NOT NULL")
        sql = ("SELECT * FROM candidates " + (f"WHERE {' AND '.join(where)} " if where else "")
               + "ORDER BY id")
        return [_row(r) for r in self._conn.execute(sql, params).fetchall()]

    def generation_rows(self, generation: int) -> dict[int, Row]:
        """The stored candidates of ``generation``, keyed by position (missing positions: not
        evaluated yet)."""
        rows = self._conn.execute("SELECT * FROM candidates WHERE generation = ? ORDER BY id",
                                  (generation,)).fetchall()
        return {r.position: r for r in map(_row, rows)}

    def count(self) -> int:
        """How many candidates are stored (explored)."""
        return self._conn.execute("SELECT count(*) FROM candidates").fetchone()[0]

    def count_before(self, generation: int) -> int:
        """How many stored candidates belong to generations before ``generation``."""
        return self._conn.execute("SELECT count(*) FROM candidates WHERE generation < ?",
                                  (generation,)).fetchone()[0]

    def status_counts(self) -> dict[str, int]:
        """How many stored candidates ended in each status (statuses with none are absent)."""
        return dict(self._conn.execute(
            "SELECT status, count(*) FROM candidates GROUP BY status").fetchall())

    # --- rungs (multi-fidelity) ---------------------------------------------------------------------
    def add_rung(self, generation: int, position: int, rung: int, bracket: int, steps: int,
                 formula: str, status: str, fitness: float | None, metrics: dict[str, float],
                 seconds: float, details: dict[str, Any]) -> None:
        """Commit one finished rung of the candidate at ``(generation, position)``; committed
        before it returns. Idempotent: a second write of the same rung is ignored."""
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO rungs (generation, slot, rung, bracket, steps, formula, "
                "status, fitness, metrics, seconds, details, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (generation, position, rung, bracket, steps, formula, status, fitness,
                 json.dumps(json_safe(metrics), allow_nan=False, default=_json_default), seconds,
                 json.dumps(json_safe(details), allow_nan=False, default=_json_default),
                 time.time()))

    def rung_rows(self, generation: int | None = None, before: int | None = None) -> list[RungRow]:
        """Stored rung results ordered by (generation, position, rung): only ``generation``'s
        when given, only those of generations before ``before`` when given. A study file without
        the table (read-only, written before it existed) has none."""
        where, params = [], []
        if generation is not None:
            where.append("generation = ?")
            params.append(generation)
        if before is not None:
            where.append("generation < ?")
            params.append(before)
        sql = ("SELECT * FROM rungs " + (f"WHERE {' AND '.join(where)} " if where else "")
               + "ORDER BY generation, slot, rung")
        try:
            rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return []
            raise
        return [RungRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9],
                        json.loads(r[10]), r[11]) for r in rows]

    # --- transfer panel ------------------------------------------------------------------------
    def add_panel_run(self, setting: str, loss: str, seed: int, status: str,
                      metrics: dict[str, float], seconds: float) -> None:
        """Commit one finished panel training (validation ``metrics``); committed before it
        returns. Idempotent: a second write of the same (setting, loss, seed) is ignored."""
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO panel_runs VALUES (?,?,?,?,?,?,?)",
                (setting, loss, int(seed), status,
                 json.dumps(json_safe(metrics), allow_nan=False, default=_json_default),
                 float(seconds), time.time()))

    def panel_runs(self) -> list[dict[str, Any]]:
        """Every stored panel training as ``{"setting", "loss", "seed", "status", "metrics",
        "seconds"}``, in commit order; none for a file without the table (read-only, older)."""
        try:
            rows = self._conn.execute("SELECT setting, loss, seed, status, metrics, seconds "
                                      "FROM panel_runs ORDER BY created, rowid").fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return []
            raise
        return [{"setting": r[0], "loss": r[1], "seed": r[2], "status": r[3],
                 "metrics": json.loads(r[4]), "seconds": r[5]} for r in rows]

    def clear_panel_runs(self) -> None:
        """Delete every stored panel training (a restarted panel); committed before it returns."""
        with self._conn:
            self._conn.execute("DELETE FROM panel_runs")

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, generation: int, state: dict[str, Any]) -> None:
        """Store the JSON ``state`` after ``generation`` completed, replacing an earlier checkpoint
        of that generation. Committed before it returns."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                               (generation, json.dumps(state, default=_json_default), time.time()))

    def last_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """``(generation, state)`` of the latest checkpoint, or ``None`` before the first."""
        row = self._conn.execute(
            "SELECT generation, state FROM checkpoints ORDER BY generation DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def checkpoints(self) -> list[tuple[int, dict[str, Any]]]:
        """Every checkpoint as ``(generation, state)``, oldest first."""
        rows = self._conn.execute("SELECT generation, state FROM checkpoints ORDER BY generation")
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


def json_safe(obj):
    """JSON-safe copy: non-finite floats become ``None``, tuples lists (what every JSON the
    project writes — study columns, ``evaluate`` results, the transfer panel — goes through)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
