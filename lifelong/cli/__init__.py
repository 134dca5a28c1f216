"""The ``lifelong`` command: one Typer app; each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from lifelong.errors import LifelongError

app = typer.Typer(
    name="lifelong",
    help="Lifelong anomaly detection through unlearning: benchmark, stores, registry and pipeline tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines ``register(app: typer.Typer) -> None``. Add a line here to add a command group.
_COMMAND_MODULES = [
    "lifelong.cli.bench",
    "lifelong.cli.labels",
    "lifelong.cli.registry",
    "lifelong.cli.report",
    "lifelong.cli.simulate",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)

err_console = Console(stderr=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected failures become one readable line and exit status 1, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except LifelongError as exc:
        # escape: messages quote user data (entity ids, file names) that may contain "[...]"; one line always.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors arrive as ClickException subclasses
        import click

        # Newer typer vendors click (typer._click): its usage errors are not instances of click's classes.
        if isinstance(exc, click.exceptions.ClickException) or (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            exc.show()
            sys.exit(exc.exit_code)
        raise
