"""The ``lossforge`` command line (typer + rich): ``lossforge.cli:app`` is the console script.

One module per verb group, each verb a thin ``*_cli`` wrapper over a plain function that returns
data (importable and testable without the command line):

- :mod:`~lossforge.cli._app`: the Typer ``app``, one-line errors (``fail``, ``guarded``), the
  shared options and the ``Format`` choices;
- :mod:`~lossforge.cli.catalog`: ``zoo``, ``tasks``;
- :mod:`~lossforge.cli.evaluate`: ``evaluate``;
- :mod:`~lossforge.cli.search`: ``search``, ``rung-check``, ``resume`` (with :mod:`~lossforge.cli.live`, the live
  view);
- :mod:`~lossforge.cli.study`: ``show``, ``refine``, ``export``, ``report``;
- :mod:`~lossforge.cli.tables`: the rich tables results are printed as.

Errors are one line with what to do, exit code 1, no traceback unless ``--debug``. ``--help`` stays
fast: the verbs import the library inside their functions.
"""
from __future__ import annotations

import sys

from lossforge.cli._app import Format, app, fail, guarded
# importing a verb module registers its commands on ``app`` (in this order in --help)
from lossforge.cli import catalog, evaluate, search, study  # noqa: F401  isort: skip

__all__ = ["Format", "app", "fail", "guarded", "main"]


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
