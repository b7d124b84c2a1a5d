"""The Typer app every verb registers on, and what the verbs share: one-line errors (``fail``,
``guarded``, usage errors without a boxed panel), the global ``--debug``/``--threads`` options, the
executor options (``_WORKERS``, ``_DASK``, ``_TIMEOUT``) and the ``--format`` choices (``Format``).

Errors are one line with what to do, exit code 1, no traceback unless ``--debug``. Only light
imports here: ``lossforge --help`` must stay fast, so the verbs import the library inside their
functions.
"""
from __future__ import annotations

import functools
import sys
from enum import Enum
from typing import Any, Callable, NoReturn, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable)


class Format(str, Enum):
    """What a verb prints on stdout: rich tables, or one JSON document (nothing else on stdout)."""

    table = "table"
    json = "json"


def emit(data: Any, format: Format, table: str, json_data: Any = None) -> None:
    """Print a verb's result: ``json_data`` (default ``data``) as one JSON document, or ``data``
    through the printer named ``table`` in :mod:`lossforge.cli.tables` (imported only then)."""
    if format == Format.json:
        import json

        print(json.dumps(data if json_data is None else json_data))
        return
    from lossforge.cli import tables

    getattr(tables, table)(data)


class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (unknown command or option, bad value) as one line, not a boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        # click's exception base, whether typer vendors click or depends on it
        click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click_error as err:
            message = " ".join(err.format_message().split())
            if message:  # (no message: the help was shown for a bare command)
                ctx = getattr(err, "ctx", None)
                where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                err_console.print(f"[bold red]error:[/] {message}{where}", highlight=False,
                                  soft_wrap=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            err_console.print("[bold red]aborted[/]")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=_OneLineErrors, help="lossforge: discover loss functions automatically.")
#: Errors, progress bars and the live view go to stderr; results to stdout.
err_console = Console(stderr=True, emoji=False)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          threads: int = typer.Option(1, "--threads", min=1,
                                      help="Torch threads in this process (small proxy models run "
                                           "fastest on 1; scale out with --workers or --dask).")):
    _state["debug"] = debug
    import torch

    torch.set_num_threads(threads)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with code 1."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def guarded(fn: F) -> F:
    """Turn expected user errors into one-line messages (full traceback with ``--debug``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, BrokenPipeError):
            raise
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            if _state["debug"]:
                raise
            msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            fail(str(msg))

    return wrapper  # type: ignore[return-value]


# --- options shared by several verbs ----------------------------------------------------------------
_FORMAT = typer.Option(Format.table, "--format", help="table or json.")
_WORKERS = typer.Option(None, "--workers", help="Train candidates in N local processes.")
_DASK = typer.Option(None, "--dask", help="Train on a Dask cluster: scheduler ADDRESS (tcp://host:8786), "
                                          "or local:N for N local worker processes.")
_TIMEOUT = typer.Option(None, "--timeout", help="Seconds one candidate may train; longer: failed.")

__all__ = ["Format", "app", "err_console", "fail", "guarded"]
