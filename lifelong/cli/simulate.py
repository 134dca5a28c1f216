"""``lifelong simulate`` and ``lifelong labels from-truth``: synthetic telemetry and simulated analysts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from lifelong.settings import get_settings

if TYPE_CHECKING:
    from lifelong.simulation import SimulatedHour

FROM_TRUTH = "from-truth"


class SimKind(StrEnum):
    """Stream kinds the simulator writes."""

    events = "events"
    vectors = "vectors"


class SimFormat(StrEnum):
    """Raw file formats the simulator writes."""

    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the app and ``from-truth`` to the ``labels`` group (see lifelong.cli.labels)."""
    from lifelong.cli.labels import labels_app

    app.command("simulate")(simulate)
    # The labels group is built in lifelong.cli.labels; a second register() (a test's own app) must not add
    # the command twice.
    if not any(info.name == FROM_TRUTH for info in labels_app.registered_commands):
        labels_app.command(FROM_TRUTH)(from_truth)


def _console() -> Console:
    # Built per command, not at import: it must see this run's stdout and terminal width (COLUMNS).
    return Console()


def _print_json(payload: Any) -> None:
    # typer.echo, not rich: JSON must come out exactly, never wrapped or highlighted.
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time, e.g. 2024-05-01T10 or 2024-05-01T10:00Z",
            param_hint=option,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)  # naive means UTC


def _default_start(hours: int) -> datetime:
    """The current UTC hour minus ``hours``: the simulated hours end where the current one starts."""
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)


def _files_cell(hour: SimulatedHour) -> Text:
    names = [path.rsplit("/", 1)[1] for path in hour.files]
    return Text(f"{hour.raw_path}/{{{', '.join(names)}}}" if len(names) > 1 else "".join(hour.files))


def simulate(
    hours: Annotated[int, typer.Option("--hours", "-n", min=1, help="How many hours to simulate.")],
    stream: Annotated[
        str | None, typer.Option("--stream", "-s", help="Stream (lake folder). Default: LIFELONG_STREAM.")
    ] = None,
    kind: Annotated[
        SimKind | None,
        typer.Option(case_sensitive=False, help="events or vectors. Default: LIFELONG_STREAM_KIND."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="First hour (ISO 8601, UTC if no zone; floored to the hour). "
            "Default: the current UTC hour minus --hours, so the last simulated hour is the previous one."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, help="Seed; the same seed and hour land the same files. Default: LIFELONG_SEED."),
    ] = None,
    sessions_per_hour: Annotated[int, typer.Option(min=1, help="Sessions (events) or rows (vectors) per hour.")] = 300,
    anomaly_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of abnormal entities.")] = 0.08,
    drift_from_hour: Annotated[
        int, typer.Option(min=0, help="Hours after --start before drift appears (0: from the first hour).")
    ] = 4,
    drift_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of normal entities that drift from then on.")
    ] = 0.3,
    shards: Annotated[
        int, typer.Option(min=1, max=999, help="Files per hour, split by entity (scored in parallel).")
    ] = 2,
    fmt: Annotated[SimFormat, typer.Option("--format", case_sensitive=False, help="Raw file format.")] = (
        SimFormat.parquet
    ),
    n_features: Annotated[int, typer.Option(min=4, help="vectors: numeric features per row.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Land synthetic telemetry (anomalies, then drift) in the lake's raw partitions; truth kept aside."""
    from lifelong.simulation import simulate as run_simulation

    settings = get_settings()
    stream_name = stream or settings.stream
    stream_kind = kind.value if kind is not None else settings.stream_kind
    first = _parse_time(start, "--start") or _default_start(hours)
    arguments: dict[str, Any] = {
        "stream": stream_name,
        "kind": stream_kind,
        "hours": hours,
        "start": first,
        "seed": settings.seed if seed is None else seed,
        "sessions_per_hour": sessions_per_hour,
        "anomaly_rate": anomaly_rate,
        "drift_from_hour": drift_from_hour,
        "drift_rate": drift_rate,
        "shards": shards,
        "fmt": fmt.value,
        "n_features": n_features,
    }
    if as_json:
        result = run_simulation(settings, **arguments)
        _print_json([hour.to_dict() for hour in result])
        return

    console = _console()
    with Progress(
        TextColumn("simulating {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # plain output when piped or run by a scheduler
    ) as progress:
        task = progress.add_task(stream_name, total=hours)
        result = run_simulation(settings, **arguments, on_hour=lambda _hour: progress.advance(task))

    unit = "sessions" if stream_kind == "events" else "rows"
    table = Table(
        title=f"{stream_kind} telemetry for stream {stream_name!r}: {hours} hours",
        title_justify="left",
    )
    for name, justify in (
        ("hour (UTC)", "left"),
        ("files", "left"),
        (unit, "right"),
        ("raw rows", "right"),
        ("anomalies", "right"),
        ("drift", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    for hour in result:
        table.add_row(
            f"{hour.interval_start:%Y-%m-%d %H:00}",
            _files_cell(hour),
            str(hour.n),
            str(hour.rows),
            str(hour.n_abnormal),
            str(hour.n_drift),
        )
    console.print(table)
    truth_root = result[0].truth_path.split("/date=", 1)[0] if result else f"truth/{stream_name}"
    console.print(Text(f"ground truth kept at {truth_root}/ (outside raw/)"), soft_wrap=True)


def from_truth(
    stream: Annotated[str | None, typer.Option("--stream", "-s", help="Stream. Default: LIFELONG_STREAM.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only intervals starting at or after (ISO 8601; UTC if no zone). Default: all."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only intervals starting before (ISO 8601; UTC if no zone).")
    ] = None,
    fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the mistakes the analysts catch (seeded).")
    ] = 1.0,
    max_labels: Annotated[
        int | None, typer.Option(min=1, help="At most this many labels (FP and FN together).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of which mistakes are caught when --fraction < 1.")] = 0,
    analyst: Annotated[str, typer.Option(help="Recorded as the labels' analyst.")] = "simulated-analyst",
    incident: Annotated[str | None, typer.Option(help="Incident tag for every label.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Label the scorer's mistakes from the simulator's ground truth: FP for false alarms, FN for misses."""
    from lifelong.simulation import file_labels_from_truth

    settings = get_settings()
    stream_name = stream or settings.stream
    summary = file_labels_from_truth(
        settings,
        stream=stream_name,
        start=_parse_time(since, "--since"),
        end=_parse_time(until, "--until"),
        analyst=analyst,
        incident=incident,
        max_labels=max_labels,
        fraction=fraction,
        seed=seed,
    )
    if as_json:
        _print_json({"stream": stream_name, **summary.to_dict()})
        return
    console = _console()
    table = Table(title=f"labels from ground truth on stream {stream_name!r}", title_justify="left")
    for name in ("", "false alarms (FP)", "missed anomalies (FN)"):
        table.add_column(name, justify="left" if not name else "right")
    table.add_row("mistakes found", str(summary.false_alerts), str(summary.missed))
    table.add_row("labels added", str(summary.fp), str(summary.fn))
    console.print(table)
    console.print(
        Text(
            f"{summary.already} already labelled, {summary.conflicts} left alone (labelled the other way), "
            f"{summary.left_out} not caught (--fraction/--max-labels), {summary.skipped} without ground truth"
        ),
        soft_wrap=True,
    )
