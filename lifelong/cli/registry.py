"""``lifelong registry`` (list, show, rollback) and ``lifelong audit``: inspect and steer the registry."""

from __future__ import annotations

import getpass
import json
import os
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lifelong.cli.options import parse_since
from lifelong.settings import get_settings

if TYPE_CHECKING:
    from lifelong.stores.registry import AuditRecord, ModelRegistry

registry_app = typer.Typer(
    help="The model registry: versions, the production pointer, rollbacks.", no_args_is_help=True
)

console = Console()

ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Registry name of the model. Default: LIFELONG_MODEL_NAME."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_DECISION_STYLES = {"promoted": "green", "rejected": "yellow", "rolled_back": "cyan", "conflict": "red"}


def register(app: typer.Typer) -> None:
    """Add the ``registry`` command group and the ``audit`` command to the ``lifelong`` app."""
    app.add_typer(registry_app, name="registry")
    app.command("audit")(audit_command)


# -- helpers --------------------------------------------------------------------------------------------
def _open(model: str | None) -> tuple[ModelRegistry, str]:
    # Imported here so `lifelong --help` does not pay for boto3.
    from lifelong.stores.registry import ModelRegistry

    settings = get_settings()
    return ModelRegistry.from_settings(settings), model or settings.resolved_model_name


def _print_json(payload: Any) -> None:
    # typer.echo, not rich: JSON must come out exactly, never wrapped or highlighted.
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True))


def _text(value: Any) -> Text:
    # Text(), not a str: reasons and run ids are data, and "[x]" must not be read as rich markup.
    return Text("" if value is None else str(value))


def _short(version: Any) -> str:
    return str(version)[:12] if version else ""


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, datetime):
        return ""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _parent(manifest: dict[str, Any]) -> Any:
    return manifest.get("parent") or manifest.get("parent_version")


_parse_since = parse_since


def _default_actor() -> str:
    user = os.environ.get("USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry
        return "unknown"


def _cell(value: Any) -> Text:
    if isinstance(value, dict | list):
        return Text(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return _text(value)


# -- registry list ----------------------------------------------------------------------------------------
@registry_app.command("list")
def list_command(model: ModelOption = None, as_json: JsonOption = False) -> None:
    """List a model's versions, oldest first; the production one is marked with '*'."""
    registry, name = _open(model)
    pointer = registry.production(name)
    versions = registry.list_versions(name)
    current = pointer.version if pointer else None
    if as_json:
        _print_json(
            {
                "model": name,
                "registry": registry.store.url,
                "production": pointer.to_dict() if pointer else None,
                "versions": [{**m, "production": m.get("version") == current} for m in versions],
            }
        )
        return
    if not versions:
        others = [m for m in registry.list_models() if m != name]
        hint = f" (models there: {', '.join(others)}; choose one with --model)" if others else ""
        console.print(f"model {name!r} has no versions in {registry.store.url}{hint}", highlight=False)
        return
    table = Table(title=f"{name}: {len(versions)} version(s) in {registry.store.url}", title_justify="left")
    for column, justify in (
        ("", "left"),
        ("version", "left"),
        ("created (UTC)", "left"),
        ("parent", "left"),
        ("run id", "left"),
        ("files", "left"),
    ):
        table.add_column(column, justify=justify, overflow="fold")
    for manifest in versions:
        version = manifest.get("version")
        table.add_row(
            Text("*", style="bold green") if version == current else "",
            _short(version),
            _when(manifest.get("created_at")),
            _short(_parent(manifest)),
            _text(manifest.get("run_id")),
            _text(", ".join(sorted(manifest.get("files", {})))),
        )
    console.print(table)
    if pointer is None:
        console.print("no production version yet", highlight=False)
    else:
        console.print(
            f"production: {_short(pointer.version)} ({pointer.decision} by {pointer.actor} at "
            f"{_when(pointer.updated_at)} UTC)",
            highlight=False,
        )


# -- registry show ----------------------------------------------------------------------------------------
@registry_app.command("show")
def show_command(
    version: Annotated[str, typer.Argument(help="A version or a unique prefix of one (like a git commit).")],
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the manifest of one version."""
    registry, name = _open(model)
    full = registry.resolve_version(name, version)
    manifest = registry.get_manifest(name, full)
    pointer = registry.production(name)
    if as_json:
        _print_json(manifest)
        return
    is_production = pointer is not None and pointer.version == full
    table = Table(
        title=f"{name} {full}" + (" (production)" if is_production else ""),
        title_justify="left",
        show_header=False,
    )
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key in sorted(manifest):
        value = manifest[key]
        if key == "files" and isinstance(value, dict):
            # One line per artifact reads better than a JSON blob of hashes.
            lines = [
                f"{name}  {meta.get('size', '?')} B  sha256 {str(meta.get('sha256', ''))[:16]}"
                for name, meta in sorted(value.items())
                if isinstance(meta, dict)
            ]
            table.add_row(key, Text("\n".join(lines)))
        else:
            table.add_row(key, _cell(value))
    console.print(table)


# -- registry rollback ------------------------------------------------------------------------------------
@registry_app.command("rollback")
def rollback_command(
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why: recorded in the audit log.")],
    model: ModelOption = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Version (or unique prefix) to serve. Default: the one production replaced."),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who rolls back. Default: $USER.")] = None,
) -> None:
    """Point production back at an earlier version (compare-and-swap; audited as 'rolled_back')."""
    if not reason.strip():
        raise typer.BadParameter("give a reason; it goes into the audit log", param_hint="--reason")
    registry, name = _open(model)
    target = registry.resolve_version(name, to) if to else None
    run_id = f"cli-rollback-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    record = registry.rollback(
        name, to_version=target, actor=actor or _default_actor(), reason=reason.strip(), run_id=run_id
    )
    console.print(
        f"rolled back model {name!r}: production {_short(record.from_version)} -> "
        f"{_short(record.to_version)} (audit run id {run_id})",
        highlight=False,
    )


# -- audit ------------------------------------------------------------------------------------------------
def _audit_table(name: str, records: list[AuditRecord]) -> Table:
    table = Table(title=f"{name}: {len(records)} decision(s)", title_justify="left")
    for column in ("time (UTC)", "decision", "from", "to", "actor", "run id", "reason"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(
            _when(record.timestamp),
            Text(record.decision, style=_DECISION_STYLES.get(record.decision, "")),
            _short(record.from_version),
            _short(record.to_version),
            _text(record.actor),
            _text(record.run_id),
            _text(record.reason),
        )
    return table


def audit_command(
    model: ModelOption = None,
    since: Annotated[
        str | None, typer.Option(help="Only decisions at or after this ISO 8601 time (naive means UTC).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the audit log of a model: every promotion, rejection, rollback and lost race, oldest first."""
    moment = _parse_since(since)
    registry, name = _open(model)
    records = registry.audit(name, since=moment)
    if as_json:
        _print_json([record.to_dict() for record in records])
        return
    if not records:
        console.print(f"no decisions recorded for model {name!r} in {registry.store.url}", highlight=False)
        return
    console.print(_audit_table(name, records))
