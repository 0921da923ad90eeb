"""A local (or mounted) folder of change files: the embedded default source."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_cdc_provider import assets
from airflow_cdc_provider.exceptions import FileChangedError
from airflow_cdc_provider.get_provider_info import connection_form_behaviour
from airflow_cdc_provider.hooks.files import ChangeFile, FileChangeFeedHook


class LocalChangeFeedHook(FileChangeFeedHook):
    """Change files in a folder of the worker's file system (a local disk or a shared mount).

    Writers should move a finished file into the folder (write elsewhere or under a ``.tmp`` name, then
    rename): files whose names start with ``.`` or ``_`` or end with ``.tmp``/``.partial`` are skipped.

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
        for directory, _, names in os.walk(root):
            for name in names:
                full = Path(directory, name)
                stat = full.stat()
                yield ChangeFile(
                    modified=_utc_from_ns(stat.st_mtime_ns),
                    path=full.relative_to(root).as_posix(),
                    size=stat.st_size,
                    identity=_identity(stat),
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


def _identity(stat: os.stat_result) -> str:
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def _utc_from_ns(nanoseconds: int) -> datetime:
    seconds, rest = divmod(nanoseconds, 10**9)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=rest // 1000)
