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


class ChangeFileUnavailableError(ChangeFeedError):
    """A listed change file cannot be read for the moment (no permission yet, the store did not answer).

    Not a bad file, so never quarantined: the run fails having applied nothing, and a retry reads it again.
    """


class ChangeFileVanishedError(ChangeFileUnavailableError):
    """A listed change file is gone, or is not the listed version any more (renamed, moved, deleted, rewritten).

    The file engine skips it, leaves it out of the cursor and warns: the next listing sees what is there then.
    """


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
    """A column changed type in a way that cannot be applied without losing data, or the destination cannot hold
    a column's type or name."""


class UnsupportedValueError(SchemaChangeError):
    """A value the destination's column cannot hold as it is (a NUL in PostgreSQL text, nanoseconds where the
    table keeps microseconds); the message names the file, the row and the column. Nothing was applied."""


class StreamTableMismatchError(ChangeFeedError):
    """A stream's checkpoint belongs to another table of the same checkpoint table: two tables were given one
    ``stream_id``. Nothing was applied; give each table its own stream id."""


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


class IdentifierTooLongError(SchemaChangeError, ValueError):
    """A table or column name is longer than the destination's identifiers, which would cut it silently."""


class PushDownOnlyError(ChangeFeedError, TypeError):
    """A push-down destination was paired with a source of another engine."""


class PushDownOptionError(ChangeFeedError, ValueError):
    """A sync option that push-down does not offer (``sequence_column``) was asked of a push-down sync."""


class CredentialsRefusedError(ChangeFeedError):
    """The store refused the connection's credentials; nothing was read. Fix the connection and run again."""


class LandingZoneSasError(ChangeFeedError, ValueError):
    """The landing-zone connection does not hold a usable container SAS URL; the message says what to set."""


class NotDescribableError(ChangeFeedError, TypeError):
    """An object cannot be described for Airflow to store; the message names the argument and what to do."""


class SecretInDescriptionError(NotDescribableError):
    """A secret was passed straight to a constructor, and the description would carry it into Airflow's database."""


class AssetUriError(ChangeFeedError, ValueError):
    """A URI of one of this provider's schemes lacks a part; the message says which and the expected form."""


class InvalidParamError(ChangeFeedError, ValueError):
    """A run's param (from the Trigger form or the REST API's conf) has a value it cannot mean."""


class SourceStateError(ChangeFeedError, RuntimeError):
    """A source answered something the sync cannot go on from (no version, no such table, an unfinished copy).

    Nothing was applied; the message names the table or file and what it answered.
    """


class DeltaTableReadError(ChangeFeedError):
    """A Delta table's log or data files cannot be read as the Delta protocol describes them (a malformed log
    entry or deletion vector, a data file whose columns do not fit the table's schema). Nothing was applied; the
    message names the table, the version and the file."""


class UnsupportedTableFeatureError(ChangeFeedError):
    """The source table uses a feature this provider cannot read its changes through (for Delta: a reader
    table feature named in the table's protocol). Nothing was applied; the message names the feature, the
    version and a source that can read it (for Delta: ``DatabricksChangeFeedHook``, which asks Databricks)."""


class FileGoneError(ChangeFeedError):
    """A log entry or file the feed needs is not in storage (vacuumed or cleaned up): the hook's cue for
    :class:`~airflow_cdc_provider.exceptions.RetentionExpiredError`.

    :param path: the missing path, under the table root.
    :param version: the version that needs it.
    """

    def __init__(self, path: str, version: int) -> None:
        super().__init__(f"{path} (needed by version {version}) is not in the table's storage")
        self.path, self.version = path, version


class WarehouseOptionError(ChangeFeedError, ValueError):
    """A destination option that the warehouse destination does not offer (soft deletes, history, partial updates
    on Snowflake, BigQuery and Databricks); refused when the destination is built, before anything runs."""


class StagingLocationError(ChangeFeedError, ValueError):
    """A warehouse destination needs a place to stage rows or read files that it was not given (a Databricks
    volume, a Snowflake stage), or the place it was given does not point where the source's files are."""
