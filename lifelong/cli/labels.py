"""``lifelong labels`` and ``lifelong alerts``: add, import and list labels; list what was flagged."""

from __future__ import annotations

import csv
import getpass
import importlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lifelong.cli.options import parse_since
from lifelong.errors import LabelError
from lifelong.settings import Settings, get_settings

logger = logging.getLogger(__name__)

labels_app = typer.Typer(help="Analysts' labels: FP (a false alarm) and FN (a missed anomaly).", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts: what the scorer flagged.", no_args_is_help=True)

CSV_COLUMNS = ("entity", "kind", "stream", "note", "incident", "analyst", "sample")
CSV_REQUIRED = ("entity", "kind")


class Kind(StrEnum):
    """Label kinds (see lifelong.constants)."""

    FP = "FP"
    FN = "FN"


class Status(StrEnum):
    """Label statuses (see lifelong.constants)."""

    pending = "pending"
    claimed = "claimed"
    consumed = "consumed"
    superseded = "superseded"


def register(app: typer.Typer) -> None:
    """Add the ``labels`` and ``alerts`` command groups to the ``lifelong`` app."""
    app.add_typer(labels_app, name="labels")
    app.add_typer(alerts_app, name="alerts")


# -- helpers --------------------------------------------------------------------------------------------
def _open_store(settings: Settings) -> Any:
    # Imported here so `lifelong --help` does not pay for SQLAlchemy and Alembic.
    from lifelong.stores.labels import LabelStore

    return LabelStore.from_settings(settings)


_parse_since = parse_since


def _parse_sample(value: str | None, where: str) -> Any:
    if value is None or not value.strip():
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise LabelError(f"{where}sample is not valid JSON ({exc.msg} at char {exc.pos}), e.g. [3, 1, 4]") from None


def _default_analyst() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in containers without a passwd entry
        return None


def lake_resolver(settings: Settings) -> Callable[[str, str], object | None]:
    """The FN sample resolver of the CLI: the lake's score files, when the lake module offers a lookup.

    Args:
        settings: Where the lake is.

    Returns:
        ``(stream, entity) -> sample``; it raises LabelError naming the entity when nothing is found.
    """
    finder: Callable[..., object | None] | None = None
    try:
        lake = importlib.import_module("lifelong.stores.lake")
    except ModuleNotFoundError as exc:
        if exc.name not in ("lifelong.stores.lake", "lifelong.stores"):
            raise  # the lake module exists but a dependency of it is missing: a real fault
    else:
        finder = getattr(lake, "find_scored_sample", None)

    def resolve(stream: str, entity: str) -> object | None:
        sample = finder(settings, stream, entity) if finder is not None else None
        if sample is None:
            raise LabelError(f"FN for {entity} needs --sample: no scored sample found")
        return sample

    return resolve


def _console() -> Console:
    # Built per command, not at import: it must see this run's stdout and terminal width (COLUMNS).
    return Console()


def _text(value: Any) -> Text:
    # Text(), not a str: entity ids and notes are data, and "[x]" must not be read as rich markup.
    return Text("" if value is None else str(value))


def _sample_summary(sample: Any) -> str:
    if isinstance(sample, dict):
        return f"vector[{len(sample)}]"
    if isinstance(sample, list) and sample and all(isinstance(item, int) for item in sample):
        head = ", ".join(str(key) for key in sample[:5])
        return f"keys[{len(sample)}] {head}{', ...' if len(sample) > 5 else ''}"
    if isinstance(sample, list):
        return f"vector[{len(sample)}]"
    return type(sample).__name__


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _short(version: str | None) -> str:
    return "" if version is None else version[:12]


def _print_json(payload: Any) -> None:
    # typer.echo, not rich: JSON must come out exactly, never wrapped or highlighted.
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def _labels_table(labels: list[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("id", "right"),
        ("stream", "left"),
        ("entity", "left"),
        ("kind", "left"),
        ("status", "left"),
        ("model", "left"),
        ("analyst", "left"),
        ("incident", "left"),
        ("tries", "right"),
        ("created (UTC)", "left"),
        ("note", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    for label in labels:
        table.add_row(
            str(label.id),
            _text(label.stream),
            _text(label.entity_id),
            label.kind,
            label.status,
            _short(label.model_version),
            _text(label.analyst),
            _text(label.incident),
            str(label.attempts),
            _when(label.created_at),
            _text(label.note),
        )
    return table


# -- labels ---------------------------------------------------------------------------------------------
@labels_app.command("add")
def add(
    entity: Annotated[str, typer.Option("--entity", "-e", help="Session or row id of the entity.")],
    kind: Annotated[Kind, typer.Option("--kind", "-k", case_sensitive=False, help="FP or FN.")],
    stream: Annotated[
        str | None, typer.Option("--stream", "-s", help="Telemetry stream. Default: LIFELONG_STREAM.")
    ] = None,
    sample: Annotated[
        str | None,
        typer.Option(
            help="FN only: the missed sample as JSON (a list of event keys, a list of numbers or an object). "
            "Default: looked up in the lake's score files."
        ),
    ] = None,
    model_version: Annotated[str | None, typer.Option(help="FN only: the model version that passed it.")] = None,
    note: Annotated[str | None, typer.Option(help="Free text, stored as given.")] = None,
    incident: Annotated[str | None, typer.Option(help="Incident or ticket tag.")] = None,
    analyst: Annotated[str | None, typer.Option(help="Who labels it. Default: your user name.")] = None,
    supersede: Annotated[
        bool, typer.Option("--supersede", help="Replace a conflicting label (FP vs FN) of this entity.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the label as JSON.")] = False,
) -> None:
    """Label one entity: FP (flagged but normal) or FN (passed but anomalous)."""
    from lifelong.stores.labels import LabelRequest

    settings = get_settings()
    request = LabelRequest(
        stream=stream or settings.stream,
        entity_id=entity,
        kind=kind.value,
        sample=_parse_sample(sample, ""),
        model_version=model_version,
        analyst=analyst or _default_analyst(),
        note=note,
        incident=incident,
    )
    with _open_store(settings) as store:
        ((label, created),) = store.add_labels([request], supersede=supersede, sample_resolver=lake_resolver(settings))
    if as_json:
        _print_json({**label.to_dict(), "created": created})
        return
    verb = "added" if created else "already recorded:"
    _console().print(
        Text(
            f"{verb} label #{label.id} {label.kind} for {label.entity_id!r} on stream {label.stream!r} "
            f"({label.status}, model {_short(label.model_version) or 'unknown'})"
        ),
        soft_wrap=True,  # one line, whatever the terminal width: scripts grep it
    )


def _read_csv(path: Path, default_stream: str, default_analyst: str | None) -> list[Any]:
    """Every row of an analysts' CSV as a validated LabelRequest; any bad row stops the import."""
    from lifelong.stores.labels import LabelRequest, validate_request

    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # utf-8-sig: spreadsheets write a BOM
    except OSError as exc:
        raise LabelError(f"cannot read {path}: {exc.strerror}") from None
    requests = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise LabelError(f"{path} is empty; expected a header row with {', '.join(CSV_COLUMNS)}")
            columns = [name.strip().lower() for name in header]
            missing = [name for name in CSV_REQUIRED if name not in columns]
            if missing:
                raise LabelError(f"{path} line 1: the header lacks the column(s) {', '.join(missing)}")
            unknown = [name for name in columns if name not in CSV_COLUMNS]
            if unknown:
                raise LabelError(
                    f"{path} line 1: unknown column(s) {', '.join(map(repr, unknown))}; "
                    f"allowed: {', '.join(CSV_COLUMNS)}"
                )
            duplicated = sorted({name for name in columns if columns.count(name) > 1})
            if duplicated:
                raise LabelError(f"{path} line 1: column(s) {', '.join(duplicated)} appear twice")
            for fields in reader:
                line = reader.line_num
                where = f"{path} line {line}: "
                if not any(field.strip() for field in fields):
                    continue  # blank lines at the end of an export
                if len(fields) != len(columns):
                    raise LabelError(f"{where}{len(fields)} fields, but the header has {len(columns)}")
                row = {name: value.strip() for name, value in zip(columns, fields, strict=True)}
                kind = row["kind"].upper()
                request = LabelRequest(
                    stream=row.get("stream") or default_stream,
                    entity_id=row["entity"],
                    kind=kind,
                    sample=_parse_sample(row.get("sample"), where),
                    analyst=row.get("analyst") or default_analyst,
                    note=row.get("note") or None,
                    incident=row.get("incident") or None,
                    source=f"{path} line {line}",
                )
                requests.append(validate_request(request))
        except csv.Error as exc:
            raise LabelError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise LabelError(f"{path}: not UTF-8 text ({exc.reason}); export the sheet as CSV UTF-8") from None
    return requests


@labels_app.command("import")
def import_csv(
    file: Annotated[
        Path,
        typer.Argument(help="CSV with a header row: entity, kind[, stream, note, incident, analyst, sample]."),
    ],
    stream: Annotated[
        str | None,
        typer.Option("--stream", "-s", help="Stream of rows without one. Default: LIFELONG_STREAM."),
    ] = None,
    analyst: Annotated[str | None, typer.Option(help="Analyst of rows without one. Default: your user name.")] = None,
    supersede: Annotated[
        bool, typer.Option("--supersede", help="Let rows replace conflicting labels (FP vs FN).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the labels as JSON.")] = False,
) -> None:
    """Import an analysts' spreadsheet; a bad row (named by its line) stops the import and writes nothing."""
    settings = get_settings()
    requests = _read_csv(file, stream or settings.stream, analyst or _default_analyst())
    with _open_store(settings) as store:
        results = store.add_labels(requests, supersede=supersede, sample_resolver=lake_resolver(settings))
    created = sum(1 for _label, new in results if new)
    if as_json:
        _print_json([{**label.to_dict(), "created": new} for label, new in results])
        return
    _console().print(
        Text(f"imported {file}: {created} new labels, {len(results) - created} already recorded"),
        soft_wrap=True,
    )


@labels_app.command("list")
def list_labels(
    stream: Annotated[str | None, typer.Option("--stream", "-s", help="Only this stream.")] = None,
    status: Annotated[Status | None, typer.Option(help="Only this status.")] = None,
    since: Annotated[str | None, typer.Option(help="Only labels added since (ISO 8601; UTC if no zone).")] = None,
    incident: Annotated[str | None, typer.Option(help="Only this incident tag.")] = None,
    kind: Annotated[Kind | None, typer.Option(case_sensitive=False, help="Only FP or only FN.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List labels, oldest first."""
    settings = get_settings()
    with _open_store(settings) as store:
        labels = store.list_labels(
            stream=stream,
            status=status.value if status else None,
            since=_parse_since(since),
            incident=incident,
            kind=kind.value if kind else None,
            limit=limit,
        )
    if as_json:
        _print_json([label.to_dict() for label in labels])
        return
    _console().print(_labels_table(labels, f"{len(labels)} labels"))


# -- alerts ---------------------------------------------------------------------------------------------
@alerts_app.command("list")
def list_alerts(
    stream: Annotated[str | None, typer.Option("--stream", "-s", help="Only this stream.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only intervals starting at or after (ISO 8601; UTC if no zone).")
    ] = None,
    model_version: Annotated[str | None, typer.Option(help="Only alerts of this model version.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List alerts, newest data interval first."""
    settings = get_settings()
    with _open_store(settings) as store:
        alerts = store.list_alerts(stream=stream, since=_parse_since(since), model_version=model_version, limit=limit)
    if as_json:
        _print_json([alert.to_dict() for alert in alerts])
        return
    table = Table(title=f"{len(alerts)} alerts", title_justify="left")
    for name, justify in (
        ("id", "right"),
        ("stream", "left"),
        ("entity", "left"),
        ("interval start (UTC)", "left"),
        ("end", "left"),
        ("score", "right"),
        ("threshold", "right"),
        ("model", "left"),
        ("sample", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    for alert in alerts:
        table.add_row(
            str(alert.id),
            _text(alert.stream),
            _text(alert.entity_id),
            _when(alert.interval_start),
            _when(alert.interval_end),
            f"{alert.score:.4g}",
            f"{alert.threshold:.4g}",
            _short(alert.model_version),
            _sample_summary(alert.sample),
        )
    _console().print(table)
