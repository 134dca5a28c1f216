"""Exceptions that carry a message meant for people: what is wrong, where, and what to change."""

from __future__ import annotations


class LifelongError(Exception):
    """Base class of every expected failure; the CLI prints it as one line and exits 1."""


class ConfigError(LifelongError):
    """A setting or parameter has a value the project cannot use."""


class DatasetFormatError(LifelongError):
    """A dataset or telemetry file is malformed; the message names the file and the line."""


class DataValidationError(LifelongError):
    """A telemetry batch failed its expectations; it has been quarantined with its report."""


class LabelError(LifelongError):
    """A label or alert was refused by the label store (invalid, conflicting or unknown)."""


class RegistryError(LifelongError):
    """The model registry could not complete an operation."""


class ConflictError(RegistryError):
    """A compare-and-swap lost: someone else moved the pointer or wrote the object first."""


class IntegrityError(RegistryError):
    """An artifact's sha256 does not match its address: it was tampered with or corrupted."""


class NotFoundError(LifelongError):
    """A version, alias, label or file that was asked for does not exist."""
