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


class FileChangedError(ChangeFeedError):
    """A file was rewritten since it was listed: it is not read, moved or deleted in this run (the next run
    sees the new version)."""


class SequenceColumnError(BadChangeFileError):
    """A change lacks a value in the user's ``sequence_column``, so it cannot be ordered against the others.

    Nothing of the run is applied; fill the column on every change (deletes included) and run again.
    """


class EventTimeError(BadChangeFileError):
    """A change lacks a value in the user's ``event_time_column``, or the column holds no times.

    Nothing of the run is applied; fill the column on every change (deletes included) and run again.
    """


class MissingTimestampColumnError(ChangeFeedError):
    """Incremental mode was asked for, but a batch lacks the timestamp column."""


class SchemaChangeError(ChangeFeedError):
    """A column changed type in a way that cannot be applied without losing data."""


class ConcurrentSyncError(ChangeFeedError):
    """Another run of the same stream committed or holds the destination; this run applied nothing."""


class ChangeDataUnavailableError(ChangeFeedError):
    """The change data a stream's cursor needs cannot be read from the source any more.

    Nothing was applied. The remedy is a full refresh of the stream (``full_refresh=True`` on the sync
    operator, or the ``full_refresh`` DAG param), which re-reads the table's current snapshot.
    """


class RetentionExpiredError(ChangeDataUnavailableError):
    """The versions or the time window after the stream's cursor are gone: vacuumed, past the table's
    retention, cleaned from its log, or the table was replaced. A full refresh re-reads the table."""


class ChangeTrackingDisabledError(ChangeDataUnavailableError):
    """The table's change capture (Delta change data feed, Snowflake change tracking, BigQuery change
    history) was off for part of the range the stream needs. Enable it, then run a full refresh."""


class PrimaryKeyRequiredError(ChangeFeedError):
    """The source has no row identity of its own, so the sync needs the key columns that identify a row."""


class TableShapeError(ChangeFeedError):
    """A destination table's columns do not fit the destination's ``delete_mode`` / ``history`` options."""


class IdentifierTooLongError(ChangeFeedError, ValueError):
    """A table or column name is longer than the destination's identifiers, which would cut it silently."""


class PushDownOnlyError(ChangeFeedError, TypeError):
    """A push-down destination was paired with a source of another engine."""


class PushDownOptionError(ChangeFeedError, ValueError):
    """A sync option that push-down does not offer (``sequence_column``) was asked of a push-down sync."""


class WarehouseOptionError(ChangeFeedError, ValueError):
    """A destination option that the warehouse destination does not offer (soft deletes, history, partial updates
    on Snowflake, BigQuery and Databricks); refused when the destination is built, before anything runs."""


class StagingLocationError(ChangeFeedError, ValueError):
    """A warehouse destination needs a place to stage rows or read files that it was not given (a Databricks
    volume, a Snowflake stage), or the place it was given does not point where the source's files are."""
