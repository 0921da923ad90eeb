"""A local (or mounted) folder of change files: the embedded default source.

The listing is safe while writers work in the folder: a name is filtered (``.tmp``, ``.partial``, a leading
``.`` or ``_``, a name that is no change file) before anything else is asked of it, and a file that goes
between the folder's listing and its ``stat`` (a writer's rename) is left for the next run. Symbolic links
are followed, to files and to folders; a folder reached twice (two links to it, or a link loop) is read once,
under the first path in name order, and a broken link is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_cdc_provider import assets
from airflow_cdc_provider.exceptions import FileChangedError
from airflow_cdc_provider.get_provider_info import connection_form_behaviour
from airflow_cdc_provider.hooks.files import ChangeFile, FileChangeFeedHook, is_skipped_folder

log = logging.getLogger(__name__)  # a stdlib logger: Airflow routes it to the task log


class LocalChangeFeedHook(FileChangeFeedHook):
    """Change files in a folder of the worker's file system (a local disk or a shared mount).

    Writers should move a finished file into the folder (write elsewhere or under a ``.tmp`` name, then
    rename): files whose names start with ``.`` or ``_`` or end with ``.tmp``/``.partial`` are skipped.
    Symbolic links to files and folders are followed (a folder reached twice is read once).

    :param path: the folder, searched recursively. Relative to the connection's ``path`` when
        ``local_conn_id`` is given, else relative to the working directory. Templated.
    :param local_conn_id: optional connection of type ``cdc_local`` whose extra ``{"path": ...}`` is the
        base folder, so one DAG runs against different folders per deployment.
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.files.FileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``).
    """

    conn_name_attr = "local_conn_id"
    default_conn_name = "cdc_local_default"
    conn_type = "cdc_local"
    hook_name = "Local change-file folder"
    template_fields = ("path", "local_conn_id")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for Airflow 3.0 and 3.1, which ask the hook class, not the provider info."""
        return connection_form_behaviour(cls.conn_type)

    def __init__(self, path: str, *, local_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.local_conn_id = local_conn_id

    @property
    def root(self) -> Path:
        base = Path(self.get_connection(self.local_conn_id).extra_dejson["path"]) if self.local_conn_id else Path()
        return (base / self.path).absolute()

    @property
    def uri(self) -> str:
        return assets.file_uri(self.root)

    def list_files(self) -> Iterator[ChangeFile]:
        root = self.root
        if not root.is_dir():
            raise FileNotFoundError(f"change folder {root} does not exist or is not a folder")
        root_stat = root.stat()
        yield from self._walk(root, "", {(root_stat.st_dev, root_stat.st_ino): "."})

    def _walk(self, folder: Path, relative: str, folders: dict[tuple[int, int], str]) -> Iterator[ChangeFile]:
        """The change files under ``folder``; ``folders`` maps each folder read so far to its path."""
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return  # a folder that went meanwhile (a writer's temporary folder)
        for entry in entries:
            path = relative + entry.name
            if entry.is_dir():  # follows a link; False for a broken one
                if not is_skipped_folder(entry.name):
                    yield from self._walk_folder(entry, path, folders)
            elif self.wanted(path):
                file = self._listed_file(entry, path)
                if file is not None:
                    yield file

    def _walk_folder(
        self, entry: os.DirEntry[str], path: str, folders: dict[tuple[int, int], str]
    ) -> Iterator[ChangeFile]:
        try:
            found = entry.stat()
        except FileNotFoundError:
            return
        seen = folders.setdefault((found.st_dev, found.st_ino), path)
        if seen != path:
            log.warning("Folder %s is the folder %s (a link): its files are listed once, under %s", path, seen, seen)
            return
        yield from self._walk(Path(entry.path), path + "/", folders)

    def _listed_file(self, entry: os.DirEntry[str], path: str) -> ChangeFile | None:
        try:
            found = entry.stat()  # follows a link
        except FileNotFoundError:
            if os.path.islink(entry.path):  # the link is there, what it points to is not
                log.warning("Skipped %s: a symbolic link to %s, which does not exist", path, _link_target(entry))
            return None  # else gone since the folder was listed (a writer's rename): the next run sees it
        if not stat.S_ISREG(found.st_mode):
            return None  # a pipe or a socket named like a change file
        return ChangeFile(
            modified=_utc_from_ns(found.st_mtime_ns),
            path=path,
            size=found.st_size,
            identity=_identity(found),
        )

    def fetch(self, file: ChangeFile) -> contextlib.AbstractContextManager[str]:
        return contextlib.nullcontext(str(self.root / file.path))

    def move(self, file: ChangeFile, path: str) -> None:
        source, target = self._listed(file), self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    def remove(self, file: ChangeFile) -> None:
        self._listed(file).unlink()

    def _listed(self, file: ChangeFile) -> Path:
        path = self.root / file.path
        if _identity(path.stat()) != file.identity:
            raise FileChangedError(f"{path} was rewritten since it was listed")
        return path


def _link_target(entry: os.DirEntry[str]) -> str:
    try:
        return os.readlink(entry.path)
    except OSError:
        return "?"


def _identity(found: os.stat_result) -> str:
    return f"{found.st_size}-{found.st_mtime_ns}"


def _utc_from_ns(nanoseconds: int) -> datetime:
    seconds, rest = divmod(nanoseconds, 10**9)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=rest // 1000)
