"""Seeded synthetic workloads: a job-workflow grammar of log keys and operating-mode feature vectors.

Both generators model one fixed "system" (the grammar and the regime parameters never depend on the seed;
the seed only draws samples), so a model bootstrapped on ``synthetic_sequences(seed=0).train`` fits the hourly
telemetry of ``generate_event_telemetry(seed=7, ...)``, and likewise for vectors.

Event sessions (keys 1..30, see ``EVENT_KEYS``): ``open, auth, auth_ok``, then one of four processing paths
with loops of variable length, then ``commit, close`` and an optional ``cleanup``:

* read:    ``read_meta [lock] (read_block checksum){2..8} [unlock]``
* write:   ``lock (write_block replicate ack){1..5} index_update unlock flush``
* compute: ``read_meta (cache_hit | cache_miss fetch_remote [timeout_warn retry fetch_remote]){2..6}
  transform compute flush``
* archive: ``read_meta (read_block compress){2..6} verify write_block replicate ack``

Drift (new normal behaviour, kind ``"drift"``) is a fifth path that training never shows, built from known
keys in a new order: ``lock read_meta (read_block verify){2..6} compress index_update unlock``. Anomaly
kinds are listed in ``SEQUENCE_ANOMALY_KINDS``; ``"subtle"`` ones (a loop run 20-30 times, or one read
iteration that borrows the archive path's ``compress``) look locally normal and are meant to be missed by
the base model.

Feature vectors: three operating modes (``idle``, ``batch``, ``interactive``), each a Gaussian with a
rank-2 correlation structure, plus the categorical column ``mode``. Drift is a mean shift of the ``batch``
mode; anomalies are ``"far"`` (large deviations), ``"near"`` (marginals look normal but the correlation
between the two halves of the features is broken) and ``"mode_mismatch"`` (rows of one mode labelled as
another).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

import numpy as np
import pandas as pd

from lifelong.data.sequences import SequenceDataset
from lifelong.data.vectors import VectorDataset

logger = logging.getLogger(__name__)

# --- the event grammar --------------------------------------------------------------------------------
EVENT_KEYS: dict[int, str] = {
    1: "open",
    2: "auth",
    3: "auth_ok",
    4: "read_meta",
    5: "read_block",
    6: "checksum",
    7: "write_block",
    8: "replicate",
    9: "ack",
    10: "transform",
    11: "compute",
    12: "cache_hit",
    13: "cache_miss",
    14: "fetch_remote",
    15: "retry",
    16: "timeout_warn",
    17: "flush",
    18: "commit",
    19: "close",
    20: "cleanup",
    21: "lock",
    22: "unlock",
    23: "index_update",
    24: "heartbeat",
    25: "compress",
    26: "verify",
    # Declared in the system's vocabulary but never part of a normal session.
    27: "error",
    28: "exception",
    29: "rollback",
    30: "quota_exceeded",
}
_K = {name: key for key, name in EVENT_KEYS.items()}
N_EVENT_KEYS = max(EVENT_KEYS)
ERROR_KEYS = (27, 28, 29, 30)
# A key outside the system's vocabulary altogether (tests out-of-vocabulary handling).
UNKNOWN_KEY = 99

NORMAL_PATHS = ("read", "write", "compute", "archive")
_PATH_P = np.array([0.4, 0.25, 0.25, 0.1])
DRIFT_PATH = "snapshot"
SEQUENCE_ANOMALY_KINDS = ("missing_step", "extra_error", "wrong_order", "unknown_key", "subtle")

# Steps whose removal leaves a transition no normal session has (ends and unlock are excluded: dropping them
# is invisible to a next-key model that sees no end-of-session marker).
_REQUIRED = frozenset(_K[k] for k in ("auth", "auth_ok", "commit", "checksum", "ack", "replicate", "verify"))
# Adjacent pairs whose swap yields a transition no normal session has.
_ORDERED_PAIRS = frozenset(
    (_K[a], _K[b])
    for a, b in (
        ("open", "auth"),
        ("auth", "auth_ok"),
        ("commit", "close"),
        ("read_block", "checksum"),
        ("write_block", "replicate"),
        ("replicate", "ack"),
        ("cache_miss", "fetch_remote"),
        ("transform", "compute"),
        ("read_block", "compress"),
    )
)

# Seed-stream tags: each part of a dataset draws from its own generator, so changing n_test never changes
# the training sessions.
_TRAIN, _VALIDATION, _STREAM, _TELEMETRY = 10, 11, 12, 13


def _loop(rng: np.random.Generator, body: Sequence[int], lo: int, hi: int) -> list[int]:
    return list(body) * int(rng.integers(lo, hi + 1))


def sample_session(rng: np.random.Generator, path: str | None = None, *, loop_scale: int = 1) -> list[int]:
    """One normal session of the grammar (or of the drift path when ``path="snapshot"``).

    Args:
        rng: The generator to draw from.
        path: One of ``NORMAL_PATHS`` or ``DRIFT_PATH``; default: a normal path drawn with fixed odds.
        loop_scale: Internal: the "subtle" anomaly replaces the main loop's range by 20..30 repetitions.

    Returns:
        The session's keys, length about 10..40.
    """
    if path is None:
        path = NORMAL_PATHS[int(rng.choice(len(NORMAL_PATHS), p=_PATH_P))]
    k = _K
    long_loop = loop_scale > 1
    s = [k["open"], k["auth"], k["auth_ok"]]
    if rng.random() < 0.2:
        s.append(k["heartbeat"])
    if path == "read":
        s.append(k["read_meta"])
        locked = rng.random() < 0.3
        if locked:
            s.append(k["lock"])
        s += _loop(rng, (k["read_block"], k["checksum"]), *((20, 30) if long_loop else (2, 8)))
        if locked:
            s.append(k["unlock"])
    elif path == "write":
        s.append(k["lock"])
        s += _loop(rng, (k["write_block"], k["replicate"], k["ack"]), *((12, 20) if long_loop else (1, 5)))
        s += [k["index_update"], k["unlock"], k["flush"]]
    elif path == "compute":
        s.append(k["read_meta"])
        for _ in range(int(rng.integers(2, 7))):
            if rng.random() < 0.6:
                s.append(k["cache_hit"])
            else:
                s += [k["cache_miss"], k["fetch_remote"]]
                if rng.random() < 0.15:
                    s += [k["timeout_warn"], k["retry"], k["fetch_remote"]]
        s += [k["transform"], k["compute"], k["flush"]]
    elif path == "archive":
        s.append(k["read_meta"])
        s += _loop(rng, (k["read_block"], k["compress"]), 2, 6)
        s += [k["verify"], k["write_block"], k["replicate"], k["ack"]]
    elif path == DRIFT_PATH:
        s += [k["lock"], k["read_meta"]]
        s += _loop(rng, (k["read_block"], k["verify"]), 2, 6)
        s += [k["compress"], k["index_update"], k["unlock"]]
    else:
        raise ValueError(f"unknown path {path!r}; expected one of {NORMAL_PATHS + (DRIFT_PATH,)}")
    s += [k["commit"], k["close"]]
    if rng.random() < 0.3:
        s.append(k["cleanup"])
    return s


def make_anomaly(rng: np.random.Generator, kind: str) -> list[int]:
    """One abnormal session of the given kind (one of ``SEQUENCE_ANOMALY_KINDS``).

    Args:
        rng: The generator to draw from.
        kind: The anomaly kind.

    Returns:
        The session's keys.
    """
    if kind == "subtle":
        if rng.random() < 0.5:
            # A loop far longer than normal: every window of it still looks like a normal loop.
            return sample_session(rng, "read" if rng.random() < 0.6 else "write", loop_scale=2)
        # A read session with one iteration borrowing the archive path's step: each bigram exists somewhere.
        s = sample_session(rng, "read")
        checks = [i for i, key in enumerate(s) if key == _K["checksum"]]
        s[checks[int(rng.integers(len(checks)))]] = _K["compress"]
        return s
    s = sample_session(rng)
    if kind == "missing_step":
        candidates = [i for i, key in enumerate(s) if key in _REQUIRED]
        del s[candidates[int(rng.integers(len(candidates)))]]
    elif kind == "extra_error":
        s.insert(int(rng.integers(3, len(s) - 1)), int(rng.choice(ERROR_KEYS)))
    elif kind == "wrong_order":
        pairs = [i for i in range(len(s) - 1) if (s[i], s[i + 1]) in _ORDERED_PAIRS]
        i = pairs[int(rng.integers(len(pairs)))]
        s[i], s[i + 1] = s[i + 1], s[i]
    elif kind == "unknown_key":
        s.insert(int(rng.integers(3, len(s) - 1)), UNKNOWN_KEY)
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {SEQUENCE_ANOMALY_KINDS}")
    return s


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def _check_rates(anomaly_rate: float, drift_rate: float, drift_start: float = 0.0) -> None:
    for label, value in (
        ("anomaly_rate", anomaly_rate),
        ("drift_rate", drift_rate),
        ("drift_start", drift_start),
    ):
        if not 0 <= value <= 1:
            raise ValueError(f"{label} must be in [0, 1], got {value}")


def plan_kinds(
    rng: np.random.Generator,
    n: int,
    *,
    anomaly_rate: float,
    anomaly_kinds: Sequence[str],
    drift_from: int,
    drift_rate: float,
) -> list[str]:
    """Kinds of ``n`` stream samples in arrival order.

    Exactly ``round(n * anomaly_rate)`` samples are abnormal, at random positions, with the kinds cycled
    evenly (so every kind appears once there are enough anomalies); of the normal samples at positions
    ``>= drift_from``, ``round(count * drift_rate)`` are ``"drift"``.

    Args:
        rng: The generator to draw from.
        n: Number of samples.
        anomaly_rate: Share of abnormal samples.
        anomaly_kinds: The kinds to cycle through.
        drift_from: First position where drift may appear (``n`` or more: no drift).
        drift_rate: Share of the normal samples from ``drift_from`` on that are drift.

    Returns:
        One kind per sample: ``"normal"``, ``"drift"`` or an anomaly kind.
    """
    kinds = np.full(n, "normal", dtype=object)
    n_abn = min(n, _round(n * anomaly_rate))
    abn_pos = rng.choice(n, size=n_abn, replace=False)
    kinds[abn_pos] = rng.permutation(np.resize(np.asarray(anomaly_kinds, dtype=object), n_abn))
    eligible = np.flatnonzero((kinds == "normal") & (np.arange(n) >= drift_from))
    drift_pos = rng.choice(eligible, size=_round(len(eligible) * drift_rate), replace=False)
    kinds[drift_pos] = "drift"
    return [str(k) for k in kinds]


def _sessions_for(rng: np.random.Generator, kinds: Sequence[str]) -> list[list[int]]:
    out = []
    for kind in kinds:
        if kind == "normal":
            out.append(sample_session(rng))
        elif kind == "drift":
            out.append(sample_session(rng, DRIFT_PATH))
        else:
            out.append(make_anomaly(rng, kind))
    return out


def synthetic_sequences(
    *,
    seed: int = 0,
    n_train: int = 2000,
    n_test: int = 3000,
    anomaly_rate: float = 0.1,
    drift_start: float = 0.5,
    drift_rate: float = 0.3,
    n_validation: int | None = None,
) -> SequenceDataset:
    """A seeded synthetic log-key benchmark: grammar sessions, five anomaly kinds and late drift.

    Args:
        seed: Seed of every draw (same seed, same dataset).
        n_train: Normal training sessions.
        n_test: Stream sessions.
        anomaly_rate: Share of abnormal stream sessions (kinds cycled evenly).
        drift_start: Fraction of the stream after which drift sessions may appear.
        drift_rate: Share of the normal sessions after ``drift_start`` that follow the new path.
        n_validation: Held-out normal sessions from the training grammar; default ``n_train // 5``.

    Returns:
        The dataset (``name="synthetic-seq"``).
    """
    _check_rates(anomaly_rate, drift_rate, drift_start)
    n_validation = n_train // 5 if n_validation is None else n_validation
    train_rng = np.random.default_rng([seed, _TRAIN])
    val_rng = np.random.default_rng([seed, _VALIDATION])
    stream_rng = np.random.default_rng([seed, _STREAM])
    drift_from = int(np.ceil(drift_start * n_test))
    kinds = plan_kinds(
        stream_rng,
        n_test,
        anomaly_rate=anomaly_rate,
        anomaly_kinds=SEQUENCE_ANOMALY_KINDS,
        drift_from=drift_from,
        drift_rate=drift_rate,
    )
    labels = np.array([k not in ("normal", "drift") for k in kinds], dtype=bool)
    return SequenceDataset(
        name="synthetic-seq",
        train=[sample_session(train_rng) for _ in range(n_train)],
        validation=[sample_session(val_rng) for _ in range(n_validation)],
        stream=_sessions_for(stream_rng, kinds),
        stream_labels=labels,
        stream_kinds=kinds,
        notes=[
            f"synthetic workflow grammar, seed {seed}: keys 1..{N_EVENT_KEYS}, unknown key {UNKNOWN_KEY}",
            f"stream: {int(labels.sum())} anomalies of kinds {list(SEQUENCE_ANOMALY_KINDS)} "
            f"({anomaly_rate:.0%}); drift path '{DRIFT_PATH}' in {drift_rate:.0%} of the normals from "
            f"position {drift_from}",
        ],
        stream_ids=[f"syn-{i:05d}" for i in range(n_test)],
    )


# --- feature-vector regimes ---------------------------------------------------------------------------
MODES = ("idle", "batch", "interactive")
_MODE_P = np.array([0.3, 0.4, 0.3])
_DRIFT_MODE = 1  # "batch": its operating point moves (e.g. after a capacity change)
VECTOR_ANOMALY_KINDS = ("far", "near", "mode_mismatch")
MODE_COLUMN = "mode"
_FEATURE_NAMES = (
    "cpu_util",
    "mem_util",
    "disk_read",
    "disk_write",
    "net_in",
    "net_out",
    "latency_ms",
    "queue_len",
)
_SYSTEM_SEED = 20190611  # fixes the regimes: the same system whatever the sampling seed
_RANK = 2
_NOISE_SD = 0.3


def feature_names(n_features: int) -> list[str]:
    """Names of the numeric feature columns for ``n_features`` features."""
    return [_FEATURE_NAMES[j] if j < len(_FEATURE_NAMES) else f"metric_{j:02d}" for j in range(n_features)]


@lru_cache(maxsize=8)
def _regimes(n_features: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([_SYSTEM_SEED, n_features])
    means = rng.normal(0.0, 3.0, size=(len(MODES), n_features))  # (M, F)
    loadings = rng.normal(0.0, 1.0, size=(len(MODES), n_features, _RANK))  # (M, F, R)
    sd = np.sqrt((loadings**2).sum(axis=(0, 2)) / len(MODES) + _NOISE_SD**2)  # (F,) typical per-feature sd
    drift = np.zeros(n_features)
    shifted = rng.choice(n_features, size=min(3, n_features), replace=False)
    drift[shifted] = rng.choice([-1.0, 1.0], size=len(shifted)) * 2.5 * sd[shifted]
    # Telemetry-like units: each feature gets its own scale and offset (the model must standardise).
    scale = 10 ** rng.uniform(0.0, 2.0, size=n_features)
    offset = scale * 12.0
    return {"means": means, "loadings": loadings, "sd": sd, "drift": drift, "scale": scale, "offset": offset}


def sample_vectors(rng: np.random.Generator, kinds: Sequence[str], n_features: int = 8) -> pd.DataFrame:
    """Feature rows, one per kind (``"normal"``, ``"drift"`` or one of ``VECTOR_ANOMALY_KINDS``).

    Args:
        rng: The generator to draw from.
        kinds: The kind of each row.
        n_features: Number of numeric features (>= 4).

    Returns:
        A frame with the numeric features (float64) and the categorical ``mode`` column (object).
    """
    if n_features < 4:
        raise ValueError(f"n_features must be >= 4, got {n_features}")
    unknown = set(kinds) - {"normal", "drift", *VECTOR_ANOMALY_KINDS}
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; expected normal, drift or {VECTOR_ANOMALY_KINDS}")
    p = _regimes(n_features)
    kinds_arr = np.asarray(kinds, dtype=object)
    n = len(kinds_arr)
    mode = rng.choice(len(MODES), size=n, p=_MODE_P)  # (N,)
    is_drift = kinds_arr == "drift"
    mode[is_drift] = _DRIFT_MODE
    z = rng.normal(size=(n, _RANK))  # (N, R)
    x = p["means"][mode] + np.einsum("nfr,nr->nf", p["loadings"][mode], z)  # (N, F)
    near = kinds_arr == "near"
    if near.any():
        # Redraw the latent factors for the second half of the features: each marginal stays normal, the
        # correlation between the halves is gone.
        half = n_features // 2
        z2 = rng.normal(size=(int(near.sum()), _RANK))
        x[near, half:] = p["means"][mode[near], half:] + np.einsum(
            "nfr,nr->nf", p["loadings"][mode[near], half:], z2
        )
    x += rng.normal(0.0, _NOISE_SD, size=x.shape)
    x[is_drift] += p["drift"]
    for i in np.flatnonzero(kinds_arr == "far"):
        cols = rng.choice(n_features, size=int(rng.integers(1, 4)), replace=False)
        x[i, cols] += (
            rng.choice([-1.0, 1.0], size=len(cols)) * rng.uniform(6.0, 10.0, len(cols)) * p["sd"][cols]
        )
    mode_label = mode.copy()
    mismatch = np.flatnonzero(kinds_arr == "mode_mismatch")
    mode_label[mismatch] = (mode[mismatch] + rng.integers(1, len(MODES), size=len(mismatch))) % len(MODES)
    frame = pd.DataFrame(p["offset"] + p["scale"] * x, columns=feature_names(n_features))
    frame[MODE_COLUMN] = pd.Series(np.asarray(MODES, dtype=object)[mode_label], dtype="object")
    return frame


def synthetic_vectors(
    *,
    seed: int = 0,
    n_features: int = 8,
    n_train: int = 1500,
    n_test: int = 2500,
    anomaly_rate: float = 0.1,
    drift_start: float = 0.5,
    drift_rate: float = 0.3,
    n_validation: int | None = None,
) -> VectorDataset:
    """A seeded synthetic feature-vector benchmark: three modes, three anomaly kinds and a late mean shift.

    Args:
        seed: Seed of every draw.
        n_features: Number of numeric features (>= 4); the ``mode`` column comes on top.
        n_train: Normal training rows.
        n_test: Stream rows.
        anomaly_rate: Share of abnormal stream rows (kinds cycled evenly).
        drift_start: Fraction of the stream after which drift rows may appear.
        drift_rate: Share of the normal rows after ``drift_start`` from the shifted ``batch`` mode.
        n_validation: Held-out normal rows; default ``n_train // 5``.

    Returns:
        The dataset (``name="synthetic-vec"``).
    """
    _check_rates(anomaly_rate, drift_rate, drift_start)
    n_validation = n_train // 5 if n_validation is None else n_validation
    stream_rng = np.random.default_rng([seed, _STREAM])
    drift_from = int(np.ceil(drift_start * n_test))
    kinds = plan_kinds(
        stream_rng,
        n_test,
        anomaly_rate=anomaly_rate,
        anomaly_kinds=VECTOR_ANOMALY_KINDS,
        drift_from=drift_from,
        drift_rate=drift_rate,
    )
    labels = np.array([k not in ("normal", "drift") for k in kinds], dtype=bool)
    return VectorDataset(
        name="synthetic-vec",
        train=sample_vectors(np.random.default_rng([seed, _TRAIN]), ["normal"] * n_train, n_features),
        validation=sample_vectors(
            np.random.default_rng([seed, _VALIDATION]), ["normal"] * n_validation, n_features
        ),
        stream=sample_vectors(stream_rng, kinds, n_features),
        stream_labels=labels,
        stream_kinds=kinds,
        feature_columns=[*feature_names(n_features), MODE_COLUMN],
        notes=[
            f"synthetic operating modes {list(MODES)}, seed {seed}, "
            f"{n_features} numeric features + '{MODE_COLUMN}'",
            f"stream: {int(labels.sum())} anomalies of kinds {list(VECTOR_ANOMALY_KINDS)} "
            f"({anomaly_rate:.0%}); '{MODES[_DRIFT_MODE]}' mean shift in {drift_rate:.0%} of the normals "
            f"from position {drift_from}",
        ],
    )


# --- hourly telemetry for the pipeline simulation -----------------------------------------------------
_HOUR_US = 3_600_000_000


def _utc(ts: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _hour_kinds(
    rng: np.random.Generator,
    n: int,
    hour_index: int,
    anomaly_rate: float,
    kinds: Sequence[str],
    drift_from_hour: int,
    drift_rate: float,
) -> list[str]:
    if hour_index < 0:
        raise ValueError(f"hour_index must be >= 0, got {hour_index}")
    _check_rates(anomaly_rate, drift_rate)
    drift_from = 0 if hour_index >= drift_from_hour else n
    return plan_kinds(
        rng, n, anomaly_rate=anomaly_rate, anomaly_kinds=kinds, drift_from=drift_from, drift_rate=drift_rate
    )


def _truth(ids: list[str], kinds: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": pd.Series(ids, dtype=str),
            "abnormal": np.array([k not in ("normal", "drift") for k in kinds], dtype=bool),
            "kind": pd.Series(kinds, dtype=str),
        }
    )


def generate_event_telemetry(
    *,
    hour_index: int,
    interval_start: datetime,
    n_sessions: int,
    seed: int,
    anomaly_rate: float = 0.08,
    drift_from_hour: int = 4,
    drift_rate: float = 0.3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One hour of event telemetry from the same grammar as ``synthetic_sequences``.

    From hour ``drift_from_hour`` on, ``drift_rate`` of the normal sessions follow the drift path. The same
    (seed, hour_index) always gives the same frames.

    Args:
        hour_index: Hour number in the simulation (>= 0); part of the seed and of the entity ids.
        interval_start: Start of the hour (naive means UTC).
        n_sessions: Number of sessions in the hour.
        seed: Seed of the simulation.
        anomaly_rate: Share of abnormal sessions.
        drift_from_hour: First hour with drift sessions.
        drift_rate: Share of normal sessions that drift from then on.

    Returns:
        (events, truth). ``events``: columns ``entity_id`` (``s<hour>-<i>``), ``timestamp`` (UTC, in
        [interval_start, interval_start + 1 h), increasing within a session), ``event_key`` (int64) and
        ``seq`` (position in the session, int64), sorted by time. ``truth``: ``entity_id``, ``abnormal``
        (bool) and ``kind`` (str), one row per session.
    """
    rng = np.random.default_rng([seed, _TELEMETRY, hour_index])
    kinds = _hour_kinds(
        rng, n_sessions, hour_index, anomaly_rate, SEQUENCE_ANOMALY_KINDS, drift_from_hour, drift_rate
    )
    sessions = _sessions_for(rng, kinds)
    ids = [f"s{hour_index:04d}-{i:05d}" for i in range(n_sessions)]
    lengths = np.array([len(s) for s in sessions], dtype=np.int64)
    total = int(lengths.sum())
    # Gaps of at least 1 ms (whole ms) keep timestamps strictly increasing within a session.
    gaps_ms = np.maximum(1, np.rint(rng.exponential(800.0, size=total))).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    gaps_ms[starts] = 0  # the first event of a session sits at the session's start
    offsets_us = np.empty(total, dtype=np.int64)
    for a, length in zip(starts, lengths, strict=True):
        rel = np.cumsum(gaps_ms[a : a + length]) * 1000
        if rel[-1] >= _HOUR_US:  # a session longer than the hour: compress it (never happens at ~40 keys)
            rel = rel * (_HOUR_US - 1) // (rel[-1] + 1)
        start = int(rng.integers(0, _HOUR_US - rel[-1]))
        offsets_us[a : a + length] = start + rel
    events = pd.DataFrame(
        {
            "entity_id": pd.Series(np.repeat(np.asarray(ids, dtype=object), lengths), dtype=str),
            "timestamp": _utc(interval_start) + pd.to_timedelta(offsets_us, unit="us"),
            "event_key": np.concatenate(sessions).astype(np.int64) if total else np.empty(0, np.int64),
            "seq": np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
            if total
            else np.empty(0, np.int64),
        }
    )
    events = events.sort_values(["timestamp", "entity_id", "seq"], kind="mergesort", ignore_index=True)
    return events, _truth(ids, kinds)


def generate_vector_telemetry(
    *,
    hour_index: int,
    interval_start: datetime,
    n_rows: int,
    seed: int,
    n_features: int = 8,
    anomaly_rate: float = 0.08,
    drift_from_hour: int = 4,
    drift_rate: float = 0.3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One hour of feature-vector telemetry from the same regimes as ``synthetic_vectors``.

    Args:
        hour_index: Hour number in the simulation (>= 0); part of the seed and of the entity ids.
        interval_start: Start of the hour (naive means UTC).
        n_rows: Number of rows in the hour.
        seed: Seed of the simulation.
        n_features: Number of numeric features (must match the bootstrapped model's).
        anomaly_rate: Share of abnormal rows.
        drift_from_hour: First hour with drift rows.
        drift_rate: Share of normal rows that drift from then on.

    Returns:
        (rows, truth). ``rows``: ``entity_id`` (``r<hour>-<i>``), ``timestamp`` (UTC, inside the hour,
        sorted), the numeric features and ``mode``. ``truth``: ``entity_id``, ``abnormal``, ``kind``.
    """
    rng = np.random.default_rng([seed, _TELEMETRY, hour_index])
    kinds = _hour_kinds(
        rng, n_rows, hour_index, anomaly_rate, VECTOR_ANOMALY_KINDS, drift_from_hour, drift_rate
    )
    ids = [f"r{hour_index:04d}-{i:05d}" for i in range(n_rows)]
    features = sample_vectors(rng, kinds, n_features)
    offsets_us = np.sort(rng.integers(0, _HOUR_US, size=n_rows))
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "entity_id": pd.Series(ids, dtype=str),
                    "timestamp": _utc(interval_start) + pd.to_timedelta(offsets_us, unit="us"),
                }
            ),
            features,
        ],
        axis=1,
    )
    return rows, _truth(ids, kinds)
