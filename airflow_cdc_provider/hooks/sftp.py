"""Change files in a folder of an SFTP server, through the SFTP provider's SFTPHook."""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

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

    :param path: the remote folder (absolute, or relative to the login folder). Templated.
    :param sftp_conn_id: the Airflow connection of type ``sftp`` (host, port, login, password or private key).
    :param conn_retry_attempts: how many times to try connecting before failing (the SSH hook waits 3-5 s
        between attempts; wrong credentials fail on every attempt).
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.remote.RemoteFileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``, ``download_dir``).
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

    @cached_property
    def hook(self) -> SFTPHook:
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

    def download(self, file: ChangeFile, local_path: str) -> None:
        with self.hook.get_managed_conn() as sftp:
            # paramiko reads the file in pipelined 32 KiB requests straight into local_path.
            sftp.get(self._listed(sftp, file), local_path)

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


def _make_folders(sftp: SFTPClient, folder: str) -> None:
    """``mkdir -p`` over SFTP."""
    if not folder or folder in ("/", "."):
        return
    try:
        sftp.stat(folder)
    except FileNotFoundError:
        _make_folders(sftp, posixpath.dirname(folder))
        sftp.mkdir(folder)
