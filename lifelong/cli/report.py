"""``lifelong report``: fetch a version's evaluation report from the registry into a folder to open."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lifelong.constants import REPORT_PREFIX
from lifelong.errors import NotFoundError
from lifelong.settings import get_settings

logger = logging.getLogger(__name__)

err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to the ``lifelong`` app."""
    app.command("report")(report_command)


def report_command(
    version: Annotated[str, typer.Argument(help="The version, or a unique prefix of it (as git does).")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Registry name of the model. Default: LIFELONG_MODEL_NAME."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder to write into. Default: ./report-<version[:12]>."),
    ] = None,
) -> None:
    """Write a version's evaluation report (page, plots, data.json) into a folder; print index.html's path."""
    # Imported here so `lifelong --help` does not pay for boto3, numpy and the report module.
    from lifelong.reports.evaluation import INDEX_FILE, report_file_names, write_report
    from lifelong.stores.registry import ModelRegistry

    settings = get_settings()
    registry = ModelRegistry.from_settings(settings)
    name = model or settings.resolved_model_name
    full = registry.resolve_version(name, version)
    manifest = registry.get_manifest(name, full)
    names = report_file_names(list(manifest.get("files") or {}))
    if REPORT_PREFIX + INDEX_FILE not in names:
        raise NotFoundError(
            f"model {name!r} version {full[:12]} has no evaluation report (its manifest lists no "
            f"{REPORT_PREFIX}{INDEX_FILE}); reports are stored by the unlearning pipeline's evaluation step, "
            "a bootstrapped model has none"
        )
    # get_file checks each file against the manifest's sha256.
    files = {file_name: registry.get_file(name, full, file_name) for file_name in names}
    index = write_report(files, out if out is not None else Path(f"report-{full[:12]}"))
    err_console.print(f"wrote {len(files)} report files of model {name} version {full[:12]}", highlight=False)
    # The path alone on stdout, so that `xdg-open "$(lifelong report abc123)"` works.
    typer.echo(str(index))
