"""The funnel of evaluation stages: checks → GEC → LRP → proxy training (DESIGN.md §5)."""
