"""Change files in an Azure Blob Storage container, through the Microsoft Azure provider's WasbHook."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
from azure.storage.blob import ContainerClient

from airflow_cdc_provider import assets
from airflow_cdc_provider.hooks.azure_blob import BlobContainerChangeFeedHook


class WasbChangeFeedHook(BlobContainerChangeFeedHook):
    """Change files under a prefix of an Azure Blob container; a file's identity is its ETag.

    Any authentication the ``wasb`` connection supports works (connection string, account key, SAS token,
    service principal, managed identity). Needs read and list on the container. For a container handed over
    as a SAS URL, see :class:`~airflow_cdc_provider.hooks.landing_zone.LandingZoneChangeFeedHook`.

    :param container: the container name. Templated.
    :param prefix: the folder-like prefix holding the change files, searched recursively
        (``""``: the whole container). Templated.
    :param wasb_conn_id: the Airflow connection of type ``wasb``.
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.remote.RemoteFileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``, ``bad_files``, ``download_dir``,
        ``max_concurrent_fetches``, ``max_fetched_bytes``, ``fetch_part_bytes``).
    """

    conn_name_attr = "wasb_conn_id"
    default_conn_name = "wasb_default"
    conn_type = "wasb"
    hook_name = "Azure Blob Storage change files"
    template_fields: Sequence[str] = ("container", "prefix", "wasb_conn_id")

    def __init__(self, container: str, prefix: str = "", *, wasb_conn_id: str = "wasb_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.container = container
        self.prefix = prefix
        self.wasb_conn_id = wasb_conn_id

    @cached_property
    def hook(self) -> WasbHook:
        return WasbHook(wasb_conn_id=self.wasb_conn_id)

    @cached_property
    def container_client(self) -> ContainerClient:
        return self.hook.get_conn().get_container_client(self.container)

    @property
    def uri(self) -> str:
        # The account comes from the connection (no request is made): container names are per account.
        return assets.bucket_uri("wasb", f"{self.container}@{self.container_client.account_name}", self.prefix)
