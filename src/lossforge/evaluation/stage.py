"""What every funnel stage shares: counters of candidates in/out and time spent."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class StageStats:
    """``n_in`` candidates entered the stage, ``n_out`` passed it, in ``seconds`` of wall time."""

    name: str
    n_in: int = 0
    n_out: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def add(self, other: "StageStats") -> None:
        self.n_in += other.n_in
        self.n_out += other.n_out
        self.seconds += other.seconds


@contextmanager
def timed(stats: StageStats):
    start = time.perf_counter()
    try:
        yield
    finally:
        stats.seconds += time.perf_counter() - start
