"""Step 3: score one shard (a telemetry file) with the production model; write scores and alerts.

Scores go to the lake (one Parquet file per shard, overwritten on a rerun); flagged entities become alerts
in the label store (upserted, so a rerun creates no duplicates). The file is read in chunks; event
sessions are assembled per shard, so a producer must keep each session's events in one file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from lifelong.settings import Settings
from tasks.context import as_utc, label_store, lake, require_production, to_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreSummary:
    stream: str
    shard: str
    scores_path: str
    model_version: str
    scored: int
    flagged: int
    new_alerts: int


def _finite(x: float) -> float:
    # JSON and SQL have no infinity: a sample that cannot be scored at all gets the largest float.
    return float(x) if np.isfinite(x) else float(np.finfo(np.float64).max)


def _event_samples(lk: Any, path: str) -> tuple[list[str], list[list[int]]]:
    import pandas as pd

    from lifelong.telemetry import events_to_sessions

    frames = list(lk.read_file_chunks(path))
    sessions = events_to_sessions(pd.concat(frames, ignore_index=True)) if frames else {}
    ids = list(sessions)
    return ids, [sessions[i] for i in ids]


def score_shard(
    *, settings: Settings, interval_start: datetime | str, interval_end: datetime | str, shard: str
) -> dict:
    """Score one file of the interval and record what was flagged."""
    import pandas as pd

    start, end = as_utc(interval_start), as_utc(interval_end)
    serving = require_production(settings)
    det = serving.detector
    lk = lake(settings)
    if settings.stream_kind == "events":
        ids, samples = _event_samples(lk, shard)
        scores = det.sample_scores(samples) if samples else np.zeros(0)
        flags = det.decide(samples) if samples else np.zeros(0, bool)
        sample_json = [json.dumps(s) for s in samples]
    else:
        ids, scores_l, flags_l, sample_json = [], [], [], []
        feature_cols = det.config.columns
        for chunk in lk.read_file_chunks(shard):
            feats = chunk[feature_cols]
            ids += chunk["entity_id"].astype(str).tolist()
            scores_l.append(det.sample_scores(feats))
            flags_l.append(det.decide(feats))
            sample_json += [json.dumps(r, default=float) for r in feats.to_dict(orient="records")]
        scores = np.concatenate(scores_l) if scores_l else np.zeros(0)
        flags = np.concatenate(flags_l) if flags_l else np.zeros(0, bool)
    frame = pd.DataFrame(
        {
            "entity_id": pd.Series(ids, dtype=object),
            "score": scores.astype(float),
            "threshold": det.loss_threshold,
            "abnormal": flags.astype(bool),
            "model_version": serving.version,
            "interval_start": pd.Timestamp(start),
            "sample": pd.Series(sample_json, dtype=object),
        }
    )
    shard_name = PurePosixPath(shard).name.split(".")[0]
    scores_path = lk.write_scores(settings.stream, start, shard_name, frame)
    alerts = [
        {
            "stream": settings.stream,
            "entity_id": ids[i],
            "interval_start": start,
            "interval_end": end,
            "score": _finite(scores[i]),
            "threshold": det.loss_threshold,
            "model_version": serving.version,
            "sample": json.loads(sample_json[i]),
        }
        for i in np.flatnonzero(flags)
    ]
    with label_store(settings) as store:
        new = store.record_alerts(alerts) if alerts else 0
    log.info(
        "%s: %d scored, %d flagged (%d new alerts) by %s",
        shard,
        len(ids),
        len(alerts),
        new,
        serving.version[:12],
    )
    return to_summary(
        ScoreSummary(settings.stream, shard, scores_path, serving.version, len(ids), len(alerts), new)
    )
