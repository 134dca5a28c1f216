"""Named datasets (``hdfs``, ``hadoop``, ``banknote``, synthetic ones) and where the shared data lives."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from lifelong.data.sequences import SequenceDataset, load_sequence_folder
from lifelong.data.synthetic import synthetic_sequences, synthetic_vectors
from lifelong.data.vectors import VectorDataset, load_vector_csv
from lifelong.errors import ConfigError, DatasetFormatError

logger = logging.getLogger(__name__)

SHARED_DATA_ENV = "LIFELONG_SHARED_DATA"
SEQUENCE_PRESETS = ("hdfs", "hadoop", "synthetic-seq", "sequences")
VECTOR_PRESETS = ("banknote", "synthetic-vec", "vectors")
PRESETS = SEQUENCE_PRESETS + VECTOR_PRESETS

# Du et al. (CCS 2019) train the banknote autoencoder on 146 normal rows.
BANKNOTE_TRAIN_NORMAL = 146
BANKNOTE_FILE = "banknote.csv"

_HDFS_NOTE = (
    "HDFS has no normal test file here (the DeepLog copy of hdfs_test_normal is too large for the mirror); "
    "DeepLog trained on 4,855 of ~550k normal sessions and tested on ~553k, which 4,855 sessions cannot "
    "reproduce. Carving half of them keeps ~2,200 training sessions (all frequent paths) and ~2,400 test "
    "normals, about 15% of which are sequences never seen in training: the false positives unlearning fixes"
)
_BANKNOTE_NOTE = (
    "the paper's banknote test set is 586 normal + 600 abnormal rows, but this file has 762 class-0 and "
    "610 class-1 rows; the stream is simply every row not used for training: 616 normal + 610 abnormal"
)


def _candidate_roots() -> list[Path]:
    """Where the shared data may live, in the order it is looked for."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return [Path(env).expanduser()]
    return [
        Path.cwd() / ".." / "shared" / "data",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data",
    ]


def shared_data_root() -> Path:
    """The shared data folder: ``$LIFELONG_SHARED_DATA``, else ``../shared/data`` next to the cwd or the repo.

    Returns:
        The first candidate that exists (resolved), or the first candidate when none does (callers name it in
        their error message).
    """
    candidates = _candidate_roots()
    for root in candidates:
        if root.is_dir():
            return root.resolve()
    return candidates[0]


def _missing(what: str, looked: list[Path]) -> DatasetFormatError:
    where = ", ".join(str(p) for p in looked)
    return DatasetFormatError(
        f"{what} not found (looked in {where}); "
        f"pass --data PATH or set {SHARED_DATA_ENV} to the shared data folder"
    )


def _sequence_folder(name: str, data: str | Path | None) -> Path:
    if data is not None:
        folder = Path(data).expanduser()
        # Accept the shared root too: --data /path/to/shared/data finds its hdfs/ subfolder.
        if (folder / name).is_dir() and not any(folder.glob("*train")):
            folder = folder / name
        if not folder.is_dir():
            raise _missing(f"{name} data folder", [folder])
        return folder
    looked = [root / name for root in _candidate_roots()]
    for folder in looked:
        if folder.is_dir():
            return folder
    raise _missing(f"{name} data folder", looked)


def _banknote_file(data: str | Path | None) -> Path:
    if data is not None:
        base = Path(data).expanduser()
        looked = [base] if base.suffix else [base / BANKNOTE_FILE, base / "banknote" / BANKNOTE_FILE]
    else:
        looked = [root / "banknote" / BANKNOTE_FILE for root in _candidate_roots()]
    for path in looked:
        if path.is_file():
            return path
    raise _missing(BANKNOTE_FILE, looked)


def load_preset(
    name: str, *, data: str | Path | None = None, seed: int = 0, **kw: Any
) -> SequenceDataset | VectorDataset:
    """Load a named dataset.

    Presets: ``hdfs`` and ``hadoop`` (sequence folders under the shared data root), ``banknote`` (the
    CSV, ``train_normal=146`` as in the paper), ``synthetic-seq`` and ``synthetic-vec`` (generated, seeded),
    and the generic ``sequences`` (a folder) and ``vectors`` (a CSV, needs ``train_normal``) that require
    ``data``.

    Args:
        name: The preset.
        data: A folder or file overriding the default location (for ``hdfs``/``hadoop`` the shared root
            itself is accepted too).
        seed: Seed of the splits, shuffles or generator.
        **kw: Passed on to ``load_sequence_folder``, ``load_vector_csv`` or the synthetic generator.

    Returns:
        A ``SequenceDataset`` or a ``VectorDataset``.

    Raises:
        ConfigError: Unknown preset, or ``data`` / ``train_normal`` missing where required.
        DatasetFormatError: The data cannot be found or is malformed.
    """
    if name in ("hdfs", "hadoop"):
        dataset = load_sequence_folder(_sequence_folder(name, data), seed=seed, name=name, **kw)
        if name == "hdfs" and "carve_test_fraction" not in kw:
            dataset = dataclasses.replace(dataset, notes=[*dataset.notes, _HDFS_NOTE])
        return dataset
    if name == "banknote":
        kw.setdefault("train_normal", BANKNOTE_TRAIN_NORMAL)
        dataset = load_vector_csv(_banknote_file(data), seed=seed, name=name, **kw)
        if kw["train_normal"] == BANKNOTE_TRAIN_NORMAL:
            dataset = dataclasses.replace(dataset, notes=[*dataset.notes, _BANKNOTE_NOTE])
        return dataset
    if name in ("synthetic-seq", "synthetic-vec"):
        if data is not None:
            raise ConfigError(f"preset {name!r} is generated; it takes no data path (got {data})")
        return (
            synthetic_sequences(seed=seed, **kw)
            if name == "synthetic-seq"
            else synthetic_vectors(seed=seed, **kw)
        )
    if name in ("sequences", "vectors"):
        if data is None:
            raise ConfigError(
                f"preset {name!r} needs a data path (--data): "
                f"a {'folder' if name == 'sequences' else 'CSV file'}"
            )
        if name == "sequences":
            return load_sequence_folder(data, seed=seed, **kw)
        if "train_normal" not in kw:
            raise ConfigError(
                "preset 'vectors' needs train_normal: how many normal rows (from the top) train the model"
            )
        return load_vector_csv(data, seed=seed, **kw)
    raise ConfigError(f"unknown dataset preset {name!r}; expected one of {', '.join(PRESETS)}")
