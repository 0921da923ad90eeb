"""Which constructor arguments of a source or destination are secret, and keeping them out of sight.

Secrets belong in Airflow connections (the official ones, or ``cdc_delta`` for Delta storage options), which
Airflow already keeps in its secrets backend and masks in logs. A user may still pass object-store options
straight to a constructor (``storage_options={...}``, the deltalake way). Those options are judged by an explicit
allow-list of names known to hold no secret (region, endpoint, allow-http, account name, ...): every other option
is a secret, whatever its name looks like, because option names change with each object-store library and a
guess on a name (``*_KEY``, ``*_TOKEN``) misses the next one. A URL argument is secret in its password and query
string (an Azure SAS is a query string).

A secret is registered with Airflow's secrets masker as soon as the object is built, so a log line or rendered
field that would carry it shows ``***``; descriptions (:mod:`airflow_cdc_provider.describe`) leave it out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PLACEHOLDER = "***"
"""What a secret value is replaced with where it is shown (Airflow's masker shows the same)."""

OPTION_ARGUMENTS = frozenset({"storage_options"})
"""Constructor arguments holding object-store options (``deltalake``'s ``storage_options``), judged per option."""

NON_SECRET_OPTIONS = frozenset(
    name.lower()
    for name in (
        # Amazon S3 and S3-compatible stores (object_store / delta-rs names, with and without prefix)
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "REGION",
        "AWS_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "ENDPOINT",
        "ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_S3_ALLOW_UNSAFE_RENAME",
        "AWS_S3_LOCKING_PROVIDER",
        "AWS_CONDITIONAL_PUT",
        "AWS_COPY_IF_NOT_EXISTS",
        "AWS_S3_EXPRESS",
        "AWS_SKIP_SIGNATURE",
        "AWS_UNSIGNED_PAYLOAD",
        "AWS_CHECKSUM_ALGORITHM",
        "AWS_IMDSV1_FALLBACK",
        "AWS_METADATA_ENDPOINT",
        "AWS_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "DELTA_DYNAMO_TABLE_NAME",
        # Azure Blob Storage / ADLS Gen2
        "AZURE_STORAGE_ACCOUNT_NAME",
        "ACCOUNT_NAME",
        "AZURE_STORAGE_USE_EMULATOR",
        "USE_EMULATOR",
        "AZURE_STORAGE_ENDPOINT",
        "AZURE_ENDPOINT",
        "AZURE_USE_FABRIC_ENDPOINT",
        "AZURE_CONTAINER_NAME",
        "AZURE_STORAGE_CLIENT_ID",
        "AZURE_CLIENT_ID",
        "CLIENT_ID",
        "AZURE_STORAGE_TENANT_ID",
        "AZURE_TENANT_ID",
        "TENANT_ID",
        "AZURE_MSI_ENDPOINT",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_USE_AZURE_CLI",
        "AZURE_SKIP_SIGNATURE",
        "AZURE_DISABLE_TAGGING",
        # Google Cloud Storage (paths to key files, not the keys)
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SERVICE_ACCOUNT",
        "SERVICE_ACCOUNT_PATH",
        "GOOGLE_BUCKET",
        "GOOGLE_BUCKET_NAME",
        "BUCKET",
        "BUCKET_NAME",
        # HTTP client settings of every store
        "ALLOW_HTTP",
        "ALLOW_INVALID_CERTIFICATES",
        "TIMEOUT",
        "CONNECT_TIMEOUT",
        "POOL_IDLE_TIMEOUT",
        "POOL_MAX_IDLE_PER_HOST",
        "HTTP1_ONLY",
        "HTTP2_ONLY",
        "USER_AGENT",
        "MAX_RETRIES",
        "RETRY_TIMEOUT",
    )
)


def is_secret_option(name: str) -> bool:
    """Whether a storage option's value is a secret: any option not on the allow-list is."""
    return name.lower() not in NON_SECRET_OPTIONS


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL: its password and its query string (an Azure SAS, a signed URL)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return []
    return [secret for secret in (parts.password, parts.query) if secret]


def redacted_url(url: str) -> str:
    """``url`` with its password and query string replaced by the placeholder."""
    if not url_secrets(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{PLACEHOLDER}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, PLACEHOLDER if parts.query else "", parts.fragment))


def secret_values(argument: str, value: Any) -> Iterator[tuple[str, str]]:
    """``(where, secret)`` for every secret held by a constructor argument named ``argument``."""
    if argument in OPTION_ARGUMENTS and isinstance(value, Mapping):
        for name, option in value.items():
            if is_secret_option(str(name)) and option not in (None, ""):
                yield f"{argument}[{name!r}]", str(option)
    elif isinstance(value, str):
        for secret in url_secrets(value):
            yield argument, secret


def redacted(argument: str, value: Any) -> Any:
    """The argument's value as it may be shown: every secret replaced by the placeholder."""
    if argument in OPTION_ARGUMENTS and isinstance(value, Mapping):
        return {name: PLACEHOLDER if is_secret_option(str(name)) else option for name, option in value.items()}
    if isinstance(value, str):
        return redacted_url(value)
    return value


def register(argument: str, value: Any) -> Any:
    """Register the argument's secrets with Airflow's secrets masker; return ``value`` unchanged.

    Called by a constructor (``self.storage_options = register("storage_options", storage_options)``) and where
    options are read from a connection's extra, so every log line of the process masks them from then on.
    """
    for _, secret in secret_values(argument, value):
        mask(secret)
    return value


def register_options(options: Mapping[str, Any] | None) -> None:
    """Register the secret values of storage options merged from a connection's extra and the arguments."""
    register("storage_options", options)


def mask(secret: str) -> None:
    """Mask ``secret`` in this process's logs and, inside a task, in the supervisor's."""
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)
