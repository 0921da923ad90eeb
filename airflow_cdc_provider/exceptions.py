"""Errors of the change pipeline. Each names the thing at fault (file, row, column, table) and the remedy."""

from __future__ import annotations


class ChangeFeedError(Exception):
    """Base class of every error raised by this provider."""


class BadChangeFileError(ChangeFeedError):
    """A change file cannot be applied: unreadable, truncated, malformed, or with invalid content.

    Nothing of the run that met it is applied; fix or remove the file and run again.
    """


class UnknownChangeTypeError(BadChangeFileError):
    """A row's ``_change_request_type`` is neither ``u`` (insert or update) nor ``d`` (delete)."""


class MissingKeyColumnError(BadChangeFileError):
    """A primary-key column is missing from a batch of changes."""


class NullKeyError(BadChangeFileError):
    """A row has a null in a primary-key column, so it cannot be matched to a destination row."""


class EmptyChangeFileError(BadChangeFileError):
    """A change file holds no rows; without rows it cannot be told apart from a truncated upload."""


class MissingTimestampColumnError(ChangeFeedError):
    """Incremental mode was asked for, but a batch lacks the timestamp column."""


class SchemaChangeError(ChangeFeedError):
    """A column changed type in a way that cannot be applied without losing data."""


class ConcurrentSyncError(ChangeFeedError):
    """Another run of the same stream committed or holds the destination; this run applied nothing."""
