"""Change files in a folder of an SFTP server, through the SFTP provider's SFTPHook."""

from __future__ import annotations

import contextlib
import posixpath
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, BinaryIO

from airflow.providers.sftp.hooks.sftp import SFTPHook
from paramiko import SFTPClient

from airflow_cdc_provider import assets
from airflow_cdc_provider.exceptions import FileChangedError
from airflow_cdc_provider.hooks.files import ChangeFile
from airflow_cdc_provider.hooks.remote import RemoteFileChangeFeedHook


class SFTPChangeFeedHook(RemoteFileChangeFeedHook):
    """Change files in a folder of an SFTP server, searched recursively; identity is size and mtime.

    SFTP reports last-modified times in whole seconds. Writers should upload under a temporary name
    (``.tmp``, ``.partial``, ``.filepart``, or a leading ``.``) and rename when done: such files are skipped.

    Files download whole, each download thread over an SSH connection of its own (up to ``max_concurrent_fetches``
    connections at once; servers limit them, OpenSSH's ``MaxStartups`` to 10 unauthenticated ones by default).
    Not in ranged parts: an SFTP read already keeps many requests in flight on its channel (paramiko's prefetch),
    so a file is not held back by latency, and parts would share the same connection's bandwidth.

    :param path: the remote folder (absolute, or relative to the login folder). Templated.
    :param sftp_conn_id: the Airflow connection of type ``sftp`` (host, port, login, password or private key).
    :param conn_retry_attempts: how many times to try connecting before failing (the SSH hook waits 3-5 s
        between attempts; wrong credentials fail on every attempt).
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.remote.RemoteFileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``, ``bad_files``, ``download_dir``,
        ``max_concurrent_fetches``, ``max_fetched_bytes``).
    """

    conn_name_attr = "sftp_conn_id"
    default_conn_name = "sftp_default"
    conn_type = "sftp"
    hook_name = "SFTP change files"
    template_fields: Sequence[str] = ("path", "sftp_conn_id")

    def __init__(
        self, path: str, *, sftp_conn_id: str = "sftp_default", conn_retry_attempts: int = 3, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.sftp_conn_id = sftp_conn_id
        self.conn_retry_attempts = conn_retry_attempts
        self._download_connections: _ThreadConnections | None = None

    @cached_property
    def hook(self) -> SFTPHook:
        return self._new_hook()

    def _new_hook(self) -> SFTPHook:
        return SFTPHook(ssh_conn_id=self.sftp_conn_id, conn_retry_attempts=self.conn_retry_attempts)

    @property
    def uri(self) -> str:
        # The host comes from the connection (no network): folder names are per server.
        conn = self.get_connection(self.sftp_conn_id)
        return assets.sftp_uri(conn.host or "", conn.port, self.path)

    def list_files(self) -> Iterator[ChangeFile]:
        with self.hook.get_managed_conn() as sftp:
            # Listed whole before the connection closes: the engine sorts them anyway.
            return iter(list(self._walk(sftp, self.path.rstrip("/") or "/", "")))

    def _walk(self, sftp: SFTPClient, folder: str, relative: str) -> Iterator[ChangeFile]:
        try:
            entries = sftp.listdir_attr(folder)
        except FileNotFoundError:
            if not relative:
                raise
            return  # a sub-folder that went meanwhile (a writer's temporary folder)
        for entry in entries:
            mode = entry.st_mode or 0
            path = f"{relative}{entry.filename}"
            if stat.S_ISDIR(mode):
                yield from self._walk(sftp, posixpath.join(folder, entry.filename), path + "/")
            elif stat.S_ISREG(mode):
                yield ChangeFile(
                    modified=datetime.fromtimestamp(entry.st_mtime or 0, tz=timezone.utc),
                    path=path,
                    size=entry.st_size or 0,
                    identity=f"{entry.st_size}-{entry.st_mtime}",
                )

    @contextlib.contextmanager
    def downloading(self) -> Iterator[None]:
        self._download_connections = connections = _ThreadConnections(self._new_hook)
        try:
            yield
        finally:
            self._download_connections = None
            connections.close()

    def download(self, file: ChangeFile, out: BinaryIO) -> None:
        assert self._download_connections is not None, "download runs inside downloading() (fetch, fetch_in_order)"
        sftp = self._download_connections.connection()
        # paramiko reads the file in pipelined 32 KiB requests straight into ``out``.
        sftp.getfo(self._listed(sftp, file), out)

    def move(self, file: ChangeFile, path: str) -> None:
        target = posixpath.join(self.path, path)
        with self.hook.get_managed_conn() as sftp:
            source = self._listed(sftp, file)
            _make_folders(sftp, posixpath.dirname(target))
            sftp.posix_rename(source, target)  # replaces a file already there, unlike rename

    def remove(self, file: ChangeFile) -> None:
        with self.hook.get_managed_conn() as sftp:
            sftp.remove(self._listed(sftp, file))

    def _listed(self, sftp: SFTPClient, file: ChangeFile) -> str:
        """The file's remote path, after checking it still is the version listed."""
        remote = posixpath.join(self.path, file.path)
        now = sftp.stat(remote)
        if f"{now.st_size}-{now.st_mtime}" != file.identity:
            raise FileChangedError(
                f"sftp file {remote} changed since it was listed (size-mtime {file.identity} -> "
                f"{now.st_size}-{now.st_mtime}); nothing was applied, run again to pick up the new version"
            )
        return remote


class _ThreadConnections:
    """An SFTP connection per download thread (a session serves one thread at a time), all closed at the end.

    :param new_hook: builds an SFTP provider hook on the feed's connection.
    """

    def __init__(self, new_hook: Callable[[], SFTPHook]) -> None:
        self._new_hook = new_hook
        self._local = threading.local()
        self._opened = contextlib.ExitStack()
        self._lock = threading.Lock()

    def connection(self) -> SFTPClient:
        """This thread's connection, opened on first use."""
        sftp: SFTPClient | None = getattr(self._local, "sftp", None)
        if sftp is None:
            managed = self._new_hook().get_managed_conn()
            sftp = managed.__enter__()  # outside the lock: threads connect at once
            with self._lock:
                self._opened.push(managed)
            self._local.sftp = sftp
        return sftp

    def close(self) -> None:
        """Close every connection (the download threads have ended)."""
        with self._lock:
            self._opened.close()


def _make_folders(sftp: SFTPClient, folder: str) -> None:
    """``mkdir -p`` over SFTP."""
    if not folder or folder in ("/", "."):
        return
    try:
        sftp.stat(folder)
    except FileNotFoundError:
        _make_folders(sftp, posixpath.dirname(folder))
        sftp.mkdir(folder)
