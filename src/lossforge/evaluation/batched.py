"""Population-vectorised screening (placeholder: falls back to the reference path per stage).

``run_stage(stage, candidates)`` must take the same decisions as ``stage(candidates)``.
"""
from __future__ import annotations


def run_stage(stage, candidates) -> None:
    stage(candidates)
