"""Log-key session datasets: the ``SequenceDataset`` container and the folder loader (HDFS, Hadoop, ...)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lifelong.errors import DatasetFormatError

logger = logging.getLogger(__name__)

# File-name suffixes of a sequence folder (DeepLog / ait-aecid convention: ``<dataset>_<split>``).
TRAIN_SUFFIX = "train"
TEST_NORMAL_SUFFIX = "test_normal"
TEST_ABNORMAL_SUFFIX = "test_abnormal"

# Seed offsets so that the carving split and the stream shuffle draw from independent generators:
# changing one fraction never reshuffles the other.
_SPLIT_STREAM = 1
_SHUFFLE_STREAM = 2


@dataclass(frozen=True, eq=False)
class SequenceDataset:
    """Sessions of integer log keys, split for zero-positive training and a labelled test stream.

    Attributes:
        name: Dataset name (e.g. ``"hdfs"``).
        train: Normal sessions to fit on.
        validation: Held-out normal sessions (threshold calibration, the forgetting memory set).
        stream: The test stream in arrival order.
        stream_labels: Bool array (N,), True where the stream sample is abnormal.
        stream_kinds: Per stream sample: ``"normal"``, ``"drift"`` (new normal behaviour) or the anomaly kind
            (``"abnormal"`` when the source does not say which kind).
        notes: Decisions a reader should know (how splits were carved, counts, caveats).
        stream_ids: Per stream sample, its session id or ``"<file>:<line>"`` when the source has no ids.
    """

    name: str
    train: list[list[int]]
    validation: list[list[int]]
    stream: list[list[int]]
    stream_labels: np.ndarray
    stream_kinds: list[str]
    notes: list[str] = field(default_factory=list)
    stream_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        labels = np.asarray(self.stream_labels, dtype=bool)
        object.__setattr__(self, "stream_labels", labels)
        n = len(self.stream)
        if labels.shape != (n,) or len(self.stream_kinds) != n:
            raise ValueError(
                f"{self.name}: stream has {n} sessions but {labels.shape[0] if labels.ndim else 0} labels "
                f"and {len(self.stream_kinds)} kinds"
            )
        if self.stream_ids and len(self.stream_ids) != n:
            raise ValueError(f"{self.name}: stream has {n} sessions but {len(self.stream_ids)} ids")

    @property
    def n_test_normal(self) -> int:
        """Number of normal sessions (including drift) in the stream."""
        return int((~self.stream_labels).sum())

    @property
    def n_test_abnormal(self) -> int:
        """Number of abnormal sessions in the stream."""
        return int(self.stream_labels.sum())

    @property
    def max_key(self) -> int:
        """Largest key in any split (a vocabulary must cover 0..max_key); 0 for an empty dataset."""
        return max(
            (max(s) for part in (self.train, self.validation, self.stream) for s in part if s), default=0
        )

    def summary(self) -> dict[str, int | str]:
        """Counts per split, JSON-able (for reports and logs)."""
        return {
            "name": self.name,
            "train": len(self.train),
            "validation": len(self.validation),
            "stream": len(self.stream),
            "test_normal": self.n_test_normal,
            "test_abnormal": self.n_test_abnormal,
            "drift": sum(k == "drift" for k in self.stream_kinds),
        }


def _parse_keys(text: str, path: Path, lineno: int) -> list[int]:
    keys: list[int] = []
    for token in text.split():
        # str.isdigit alone accepts non-ASCII digits and int() accepts "+3"; both would hide a corrupt file.
        if token.isascii() and token.isdigit():
            keys.append(int(token))
        elif token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
            raise DatasetFormatError(f"{path}, line {lineno}: negative key {token!r}; keys must be >= 0")
        else:
            raise DatasetFormatError(f"{path}, line {lineno}: {token!r} is not an integer key")
    return keys


def read_sequence_file(path: str | Path) -> tuple[list[str], list[list[int]]]:
    """Read one session per line, as ``keys`` or ``id,keys`` (keys separated by whitespace).

    Trailing spaces, CRLF line endings, a missing final newline and blank lines are tolerated. A line without
    an id gets the id ``"<file name>:<line number>"``.

    Args:
        path: The file to read.

    Returns:
        (ids, sessions): one id and one list of int keys per non-blank line, in file order.

    Raises:
        DatasetFormatError: The file cannot be read or decoded, or a line has a non-integer or negative key,
            more than one comma, or no keys; the message names the file, the line number and the bad token.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc.strerror})") from None
    ids: list[str] = []
    sessions: list[list[int]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        n_commas = line.count(",")
        if n_commas > 1:
            raise DatasetFormatError(
                f"{path}, line {lineno}: {n_commas} commas; expected 'keys' or 'id,keys' (at most one comma)"
            )
        if n_commas == 1:
            session_id, key_text = (part.strip() for part in line.split(","))
            if not session_id:
                raise DatasetFormatError(f"{path}, line {lineno}: empty session id before the comma")
        else:
            session_id, key_text = f"{path.name}:{lineno}", line
        keys = _parse_keys(key_text, path, lineno)
        if not keys:
            raise DatasetFormatError(f"{path}, line {lineno}: session {session_id!r} has no keys")
        ids.append(session_id)
        sessions.append(keys)
    return ids, sessions


def _find_split_file(folder: Path, suffix: str, files: Sequence[Path]) -> Path | None:
    matches = [f for f in files if f.name.endswith(suffix)]
    # "test_abnormal" does not end in "test_normal", but "x_train" vs "pretrain" style clashes can exist.
    if len(matches) > 1:
        names = ", ".join(sorted(f.name for f in matches))
        raise DatasetFormatError(f"{folder}: several files end in {suffix!r} ({names}); keep exactly one")
    return matches[0] if matches else None


def _round_count(n: int, fraction: float) -> int:
    # Half-up rounding (Python's round() is half-to-even, which surprises people reading counts).
    return int(np.floor(n * fraction + 0.5))


def load_sequence_folder(
    path: str | Path,
    *,
    seed: int = 0,
    validation_fraction: float = 0.1,
    carve_test_fraction: float = 0.5,
    name: str | None = None,
) -> SequenceDataset:
    """Load a folder of ``*train``, ``*test_abnormal`` and optionally ``*test_normal`` session files.

    When there is no ``*test_normal`` file (the DeepLog HDFS copy), the held-out normal sessions are carved
    from ``*train`` by a seeded line-level split. The default ``carve_test_fraction=0.5`` is a compromise for
    HDFS's 4,855 normal sessions (839 distinct sequences, 548 of them seen once): DeepLog trained on <1% of
    ~550k normals, which we cannot mimic with 4,855, and with half of them as test normals, about 15% of the
    test normals are sequences never seen in training (the false positives lifelong unlearning is meant to
    fix), while training keeps ~2,200 sessions and every frequent path. Larger fractions make the FP rate
    larger but the training set very thin (0.9 leaves 485 sessions); smaller ones leave too few test normals
    to measure a false-positive rate (0.1 gives 486).

    From the remaining training sessions, ``validation_fraction`` (at least one when there are two or more)
    becomes the validation split. Each split keeps file order. The stream is a seeded shuffle of test normals
    and abnormals.

    Args:
        path: The folder.
        seed: Seed of the carving split and of the stream shuffle.
        validation_fraction: Share of the training sessions held out as validation, in [0, 1).
        carve_test_fraction: Share of ``*train`` carved as test normals when ``*test_normal`` is missing,
            in (0, 1); ignored otherwise.
        name: Dataset name; default: the folder name.

    Returns:
        The dataset, with ``stream_kinds`` ``"normal"`` / ``"abnormal"``.

    Raises:
        DatasetFormatError: The folder or a required file is missing, or a file is malformed.
        ValueError: A fraction is out of range.
    """
    folder = Path(path)
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if not 0 < carve_test_fraction < 1:
        raise ValueError(f"carve_test_fraction must be in (0, 1), got {carve_test_fraction}")
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: not a folder of sequence files")
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    train_file = _find_split_file(folder, TRAIN_SUFFIX, files)
    normal_file = _find_split_file(folder, TEST_NORMAL_SUFFIX, files)
    abnormal_file = _find_split_file(folder, TEST_ABNORMAL_SUFFIX, files)
    if train_file is None or abnormal_file is None:
        missing = [
            s for s, f in ((TRAIN_SUFFIX, train_file), (TEST_ABNORMAL_SUFFIX, abnormal_file)) if f is None
        ]
        raise DatasetFormatError(
            f"{folder}: no file whose name ends in {' or '.join(repr(m) for m in missing)}; expected "
            f"'<name>_{TRAIN_SUFFIX}', '<name>_{TEST_ABNORMAL_SUFFIX}' "
            f"and optionally '<name>_{TEST_NORMAL_SUFFIX}'"
        )
    name = name or folder.name
    notes: list[str] = []

    train_ids, train_all = read_sequence_file(train_file)
    abn_ids, abnormal = read_sequence_file(abnormal_file)
    if not train_all:
        raise DatasetFormatError(f"{train_file}: no sessions")
    split_rng = np.random.default_rng([seed, _SPLIT_STREAM])
    if normal_file is not None:
        normal_ids, test_normal = read_sequence_file(normal_file)
        rest = np.arange(len(train_all))
        notes.append(f"test normals: {len(test_normal)} sessions from {normal_file.name}")
    else:
        perm = split_rng.permutation(len(train_all))
        n_carve = _round_count(len(train_all), carve_test_fraction)
        carved, rest = np.sort(perm[:n_carve]), perm[n_carve:]
        test_normal = [train_all[i] for i in carved]
        normal_ids = [train_ids[i] for i in carved]
        notes.append(
            f"no *{TEST_NORMAL_SUFFIX} file: {n_carve} of {len(train_all)} sessions of {train_file.name} "
            f"({carve_test_fraction:.0%}, seed {seed}) were carved as test normals by a line-level split; "
            "identical sequences can fall on both sides, as they do in production traffic"
        )
    n_val = _round_count(len(rest), validation_fraction)
    if validation_fraction > 0 and n_val == 0 and len(rest) >= 2:
        n_val = 1
    rest = split_rng.permutation(rest)
    val_idx, train_idx = np.sort(rest[:n_val]), np.sort(rest[n_val:])
    if len(train_idx) == 0:
        raise DatasetFormatError(f"{train_file}: {len(train_all)} sessions leave nothing to train on")
    notes.append(
        f"train/validation: {len(train_idx)}/{len(val_idx)} sessions of {train_file.name} "
        f"(validation {validation_fraction:.0%}, seed {seed})"
    )
    if 0 < len(val_idx) < 20:
        notes.append(f"only {len(val_idx)} validation sessions: thresholds set on them are coarse")

    sessions = test_normal + abnormal
    ids = normal_ids + abn_ids
    labels = np.concatenate([np.zeros(len(test_normal), bool), np.ones(len(abnormal), bool)])
    order = np.random.default_rng([seed, _SHUFFLE_STREAM]).permutation(len(sessions))
    notes.append(
        f"stream: {len(test_normal)} normal + {len(abnormal)} abnormal sessions "
        f"in a seeded shuffle (seed {seed})"
    )
    dataset = SequenceDataset(
        name=name,
        train=[train_all[i] for i in train_idx],
        validation=[train_all[i] for i in val_idx],
        stream=[sessions[i] for i in order],
        stream_labels=labels[order],
        stream_kinds=["abnormal" if labels[i] else "normal" for i in order],
        notes=notes,
        stream_ids=[ids[i] for i in order],
    )
    logger.info("loaded %s from %s: %s", name, folder, dataset.summary())
    return dataset
