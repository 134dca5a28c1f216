"""``lifelong bench``: the paper's streaming benchmark on a named dataset."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Redirected to a file (a log, CI), rich assumes 80 columns and squeezes the results table into "meth…";
# a terminal keeps its own width.
console = Console(width=None if sys.stdout.isatty() else 120)


def bench(
    dataset: Annotated[
        str, typer.Option(help="banknote, hdfs, hadoop, synthetic-seq, synthetic-vec, sequences, vectors")
    ],
    json_path: Annotated[Path, typer.Option("--json", help="Write the JSON report here.")] = Path("bench.json"),
    data: Annotated[
        str | None,
        typer.Option(
            help="Folder (sequences) or CSV file (vectors); presets default to "
            "$LIFELONG_SHARED_DATA/NAME or ../shared/data/NAME."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of splits, shuffles, models and memory sampling.")] = 0,
    batch: Annotated[int, typer.Option(help="Reports per model update (the pipeline batches).")] = 1,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = "baseline,unlearn,unlearn_l2,retrain",
    plot: Annotated[Path | None, typer.Option(help="PNG of cumulative FP/FN (default: beside the JSON).")] = None,
    tp: Annotated[float | None, typer.Option(help="LSTM probability threshold Tp (default 1e-4).")] = None,
    mode: Annotated[str, typer.Option(help="LSTM decision mode: prob (Tp) or topg.")] = "prob",
    epochs: Annotated[int | None, typer.Option(help="Training epochs of the base model.")] = None,
    retrain_every: Annotated[int, typer.Option(help="Reports between retrains of the retrain method.")] = 200,
    lam: Annotated[float | None, typer.Option(help="lambda of the forgetting penalty.")] = None,
    lr_scale: Annotated[
        float | None,
        typer.Option(help="Unlearning LR as a share of the training LR (replaces the kind's explicit LR)."),
    ] = None,
    bnd_factor: Annotated[float | None, typer.Option(help="BND = factor * tau'.")] = None,
    fn_units: Annotated[str | None, typer.Option(help="FN windows to unlearn: max, topk or all.")] = None,
    fp_margin: Annotated[float | None, typer.Option(help="An FP is relearnt at score <= margin * tau'.")] = None,
    guard_units: Annotated[
        int | None, typer.Option(help="Held-out normal units guarded against getting worse (0 = off).")
    ] = None,
    guard_weight: Annotated[float | None, typer.Option(help="Weight of the no-harm guard.")] = None,
    guard_floor: Annotated[
        float | None, typer.Option(help="A guarded row may rise freely up to this share of tau'.")
    ] = None,
    guard_strict: Annotated[
        bool | None,
        typer.Option(
            "--guard-strict/--no-guard-strict",
            help="An update converges only once no held-out normal unit is newly abnormal (kind's default).",
        ),
    ] = None,
    fn_skip_normal: Annotated[
        bool | None,
        typer.Option(
            "--fn-skip-normal/--no-fn-skip-normal",
            help="Never push a missed anomaly's unit that also occurs in known-normal data (default on).",
        ),
    ] = None,
    label_column: Annotated[str | None, typer.Option(help="vectors: label column (default: last).")] = None,
    normal_value: Annotated[str, typer.Option(help="vectors: the label value that means normal.")] = "0",
    train_normal: Annotated[int | None, typer.Option(help="vectors: first N normal rows train the model.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Replay a test stream, let the ground truth report every mistake, update, and count FP and FN."""
    from lifelong.bench import BenchOptions, plot_cumulative, run_benchmark
    from lifelong.data import load_preset
    from lifelong.settings import apply_torch_threads, get_settings

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    apply_torch_threads(get_settings())  # LIFELONG_TORCH_THREADS: figures comparable with the DAG tasks'
    kw: dict = {}
    if dataset == "vectors":
        kw = {"label_column": label_column, "normal_value": normal_value}
        if train_normal is not None:
            kw["train_normal"] = train_normal
    ds = load_preset(dataset, data=data, seed=seed, **kw)
    overrides = {
        "lam": lam,
        "lr_scale": lr_scale,
        "bnd_factor": bnd_factor,
        "fn_units": fn_units,
        "fp_margin": fp_margin,
        "guard_units": guard_units,
        "guard_weight": guard_weight,
        "guard_floor": guard_floor,
        "guard_strict": guard_strict,
        "fn_skip_normal_units": fn_skip_normal,
    }
    unlearn_options = {k: v for k, v in overrides.items() if v is not None}
    if lr_scale is not None:  # a share of the training LR only applies without an explicit LR
        unlearn_options["lr"] = None
    opts = BenchOptions(
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        batch=batch,
        retrain_every=retrain_every,
        seed=seed,
        tp=tp,
        mode=mode,
        epochs=epochs,
        unlearn_options=unlearn_options,
    )
    n = len(ds.stream_labels)
    console.print(
        f"[bold]{ds.name}[/]: {ds.n_test_normal} normal + {ds.n_test_abnormal} abnormal in the stream, batch {batch}"
    )
    for note in getattr(ds, "notes", []):
        console.print(f"  note: {note}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task("training base model", total=n)

        def on_method(name: str) -> None:
            prog.update(task, description=name, completed=0)

        report, results = run_benchmark(
            ds, opts, on_method=on_method, progress=lambda _nm, i: prog.update(task, completed=i)
        )
    table = Table(title=f"streaming benchmark: {ds.name}")
    for col in ("method", "FP", "FN", "FP+FN", "F1", "seconds", "updates", "failed", "skipped", "median update s"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for name, r in results.items():
        d = r.to_dict()
        table.add_row(
            name,
            str(r.fp),
            str(r.fn),
            str(r.fp + r.fn),
            f"{r.f1:.4f}",
            f"{r.seconds:.1f}",
            str(d.get("updates", "-")),
            str(d.get("failed_updates", "-")),
            str(d.get("skipped_updates", "-")),
            str(d.get("median_update_seconds", "-")),
        )
    console.print(table)
    console.print(f"scoring: {report['scoring_sessions_per_second']:.0f} samples/s")
    if "retrain_unlearn_time_ratio" in report:
        console.print(f"retrain/unlearn median update time ratio: {report['retrain_unlearn_time_ratio']}")
    for t in report["targets"]:
        mark = "[green]met[/]" if t["met"] else "[red]NOT met[/]"
        console.print(f"target: {t['target']}: {mark}")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    png = plot or json_path.with_suffix(".png")
    plot_cumulative(results, f"{ds.name}: cumulative mistakes over the stream", png)
    console.print(f"wrote {json_path} and {png}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
