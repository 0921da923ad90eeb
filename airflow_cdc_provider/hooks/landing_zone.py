"""Change files in a data landing zone: an Azure Blob container another team hands over as a SAS URL.

The SAS URL is kept in an Airflow connection of type ``cdc_landing_zone`` (this provider registers it): its
password field holds the container's SAS URL (``https://<account>.blob.core.windows.net/<container>?sv=...``),
or the host holds the container URL and the password the SAS token alone. The token is a password in the UI
and is masked in task logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow.providers.common.compat.sdk import mask_secret
from azure.storage.blob import ContainerClient

from airflow_cdc_provider import assets
from airflow_cdc_provider.exceptions import LandingZoneSasError
from airflow_cdc_provider.get_provider_info import connection_form_behaviour
from airflow_cdc_provider.hooks.azure_blob import BlobContainerChangeFeedHook


class LandingZoneChangeFeedHook(BlobContainerChangeFeedHook):
    """Change files in an Azure data landing zone reached with a container SAS URL; identity is the ETag.

    The SAS needs the *read* and *list* permissions on the container (and *write* and *delete* to archive or
    delete applied files).

    :param prefix: the folder-like prefix inside the container holding the change files, searched
        recursively (``""``: the whole container). Templated.
    :param landing_zone_conn_id: the Airflow connection of type ``cdc_landing_zone``: password = the container
        SAS URL, or host = the container URL and password = the SAS token.
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.remote.RemoteFileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``, ``bad_files``, ``download_dir``,
        ``max_concurrent_fetches``, ``max_fetched_bytes``, ``fetch_part_bytes``).
    """

    conn_name_attr = "landing_zone_conn_id"
    default_conn_name = "cdc_landing_zone_default"
    conn_type = "cdc_landing_zone"
    hook_name = "Azure data landing zone (SAS URL)"
    template_fields: Sequence[str] = ("prefix", "landing_zone_conn_id")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for Airflow 3.0 and 3.1, which ask the hook class, not the provider info."""
        return connection_form_behaviour(cls.conn_type)

    def __init__(
        self, prefix: str = "", *, landing_zone_conn_id: str = "cdc_landing_zone_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self.landing_zone_conn_id = landing_zone_conn_id

    @cached_property
    def sas_url(self) -> str:
        """The container SAS URL from the connection; the token is registered with the log masker."""
        conn = self.get_connection(self.landing_zone_conn_id)
        secret = (conn.password or "").strip()
        host = (conn.host or "").strip()
        if secret.lower().startswith(("https://", "http://")):
            url = secret
        elif host and secret:
            url = f"{host.rstrip('/')}?{secret.lstrip('?')}"
        else:
            raise LandingZoneSasError(
                f"connection {self.landing_zone_conn_id!r} holds no SAS: put the container SAS URL "
                "(https://<account>.blob.core.windows.net/<container>?sv=...) in its password field"
            )
        token = urlsplit(url).query
        if "sig=" not in token:
            raise LandingZoneSasError(
                f"connection {self.landing_zone_conn_id!r}: the SAS URL has no signature (sig=...); "
                "paste the whole container SAS URL as handed over, query string included"
            )
        mask_secret(url)
        mask_secret(token)
        for signature in parse_qs(token).get("sig", []):
            mask_secret(signature)
        return url

    @cached_property
    def container_client(self) -> ContainerClient:
        return ContainerClient.from_container_url(self.sas_url)

    @property
    def uri(self) -> str:
        """The container URL without the SAS: stable when the token is rotated, and free of secrets."""
        return assets.container_uri(self.sas_url, self.prefix)
