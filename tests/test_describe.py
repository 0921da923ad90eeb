"""What Airflow stores and shows of a source or destination: its description, never a secret.

Every hook and destination is built with secrets passed every way it takes them (a connection's password and
extra, ``storage_options``, a URL's password and SAS query), with random secret values and random option names
(hypothesis); no secret may appear in its description, its ``repr``/``str``, Airflow's own serialization of a
template field, or its URI, and each secret passed directly is registered with Airflow's secrets masker.
A DAG serialized by Airflow's serializer names the bucket, and its hash changes with it.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider import secrets
from airflow_cdc_provider.describe import NotDescribableError, SecretInDescriptionError, describe, rebuild
from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.destinations.databricks import DatabricksDestination
from airflow_cdc_provider.destinations.delta import DeltaDestination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.destinations.postgres import PostgresDestination
from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.formats import FileFormat
from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
from airflow_cdc_provider.hooks.delta import DeltaChangeFeedHook
from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.hooks.sftp import SFTPChangeFeedHook
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook
from airflow_cdc_provider.hooks.wasb import WasbChangeFeedHook

SECRETS = st.text(string.ascii_letters + string.digits, min_size=16, max_size=40).map(lambda s: "S3cr" + s)
# Option names no allow-list holds: what a user or a new object-store release may pass.
OPTION_NAMES = st.text(string.ascii_uppercase + "_", min_size=3, max_size=24).filter(
    lambda name: not name.startswith("_") and name.lower() not in secrets.NON_SECRET_OPTIONS
)
QUICK = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def connections(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    """Every connection the objects below name, each holding ``secret`` where its type keeps credentials."""
    conns = {
        "AWS_CDC": {"conn_type": "aws", "login": "AKIAEXAMPLE", "password": secret},
        "WASB_CDC": {
            "conn_type": "wasb",
            "login": "devstoreaccount1",
            "password": secret,
            "extra": {"connection_string": f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={secret}"},
        },
        "LZ_CDC": {
            "conn_type": "cdc_landing_zone",
            "password": f"https://acct.blob.core.windows.net/landing?sv=2024-01-01&sp=rl&sig={secret}",
        },
        "GCP_CDC": {"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": {"private_key": secret}}},
        "SFTP_CDC": {"conn_type": "sftp", "host": "files.example.com", "login": "u", "password": secret},
        "DELTA_CDC": {"conn_type": "cdc_delta", "extra": {"AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "eu-west-1"}},
        "DBX_CDC": {"conn_type": "databricks", "host": "dbc.example.com", "password": secret},
        "SF_CDC": {"conn_type": "snowflake", "login": "u", "password": secret},
        "PG_CDC": {"conn_type": "postgres", "host": "db", "login": "u", "password": secret},
    }
    for conn_id, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps(conn))


def other(secret: str) -> str:
    """A second secret, given under a random option name."""
    return "Oth3r" + secret[::-1]


# Each builder takes (tmp_path, secret, option name) and passes the secret every way its class takes one.
Builder = Callable[[Path, str, str], Any]
BUILDERS: dict[str, Builder] = {
    "local": lambda tmp, s, o: LocalChangeFeedHook("landing", file_format=FileFormat(format="csv")),
    "s3": lambda tmp, s, o: S3ChangeFeedHook("bucket", "orders/", aws_conn_id="aws_cdc"),
    "wasb": lambda tmp, s, o: WasbChangeFeedHook("container", "orders/", wasb_conn_id="wasb_cdc"),
    "landing_zone": lambda tmp, s, o: LandingZoneChangeFeedHook("orders/", landing_zone_conn_id="lz_cdc"),
    "gcs": lambda tmp, s, o: GCSChangeFeedHook("bucket", "orders/", gcp_conn_id="gcp_cdc"),
    "sftp": lambda tmp, s, o: SFTPChangeFeedHook("/in/orders", sftp_conn_id="sftp_cdc"),
    "delta_hook": lambda tmp, s, o: DeltaChangeFeedHook(
        f"s3://key:{s}@lake/orders?sig={s}",
        storage_options={"AWS_REGION": "eu-west-1", "AWS_SECRET_ACCESS_KEY": s, o: other(s)},
        delta_conn_id="delta_cdc",
    ),
    "databricks_hook": lambda tmp, s, o: DatabricksChangeFeedHook("main.raw.orders", databricks_conn_id="dbx_cdc"),
    "snowflake_hook": lambda tmp, s, o: SnowflakeChangeFeedHook("RAW.SALES.ORDERS", snowflake_conn_id="sf_cdc"),
    "bigquery_hook": lambda tmp, s, o: BigQueryChangeFeedHook("p.raw.orders", gcp_conn_id="gcp_cdc"),
    "duckdb": lambda tmp, s, o: DuckDBDestination(str(tmp / "w.duckdb"), "sales.orders", delete_mode="soft"),
    "postgres": lambda tmp, s, o: PostgresDestination("sales.orders", "pg_cdc"),
    "delta": lambda tmp, s, o: DeltaDestination(
        f"abfss://lake@acct.dfs.core.windows.net/orders?{s}",
        storage_options={"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_SAS_TOKEN": s, o: other(s)},
        delta_conn_id="delta_cdc",
    ),
    "snowflake": lambda tmp, s, o: SnowflakeDestination("MART.SALES.ORDERS", snowflake_conn_id="sf_cdc"),
    "bigquery": lambda tmp, s, o: BigQueryDestination("p.mart.orders", gcp_conn_id="gcp_cdc"),
    "databricks": lambda tmp, s, o: DatabricksDestination("main.mart.orders", databricks_conn_id="dbx_cdc"),
}
DIRECT_SECRETS = {"delta_hook", "delta"}  # the classes that take secrets as arguments, not only by connection


def shown(obj: Any) -> str:
    """Everything Airflow or a log may show of ``obj``: description, repr, str, Airflow's template serialization."""
    from airflow.serialization.helpers import serialize_template_field

    return "\n".join(
        [
            json.dumps(obj.serialize()),
            repr(obj),
            str(obj),
            json.dumps(serialize_template_field(obj, "source")),
            json.dumps(serialize_template_field([obj], "sources")),
        ]
    )


def test_every_source_and_destination_class_is_covered() -> None:
    import inspect

    from airflow_cdc_provider.describe import Describable
    from tests.test_provider_info import modules, own_classes

    leaves = {
        cls.__name__
        for module in modules()
        for cls in own_classes(module)
        if issubclass(cls, Describable)
        and not inspect.isabstract(cls)
        and not any(sub.__module__.startswith("airflow_cdc_provider.") for sub in cls.__subclasses__())  # a leaf
    }
    built = {type(build(Path("/tmp"), "S3cretExample0000", "OPT")).__name__ for build in BUILDERS.values()}
    assert leaves == built, "a source or destination class that this test does not build"


@pytest.mark.parametrize("name", sorted(BUILDERS))
@QUICK
@given(secret=SECRETS, option=OPTION_NAMES)
def test_no_secret_is_shown_and_each_one_passed_directly_is_masked(
    name: str, secret: str, option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import redact

    connections(monkeypatch, secret)
    obj = BUILDERS[name](tmp_path, secret, option)
    text = shown(obj)
    assert secret not in text, f"{name}: a secret is shown:\n{text}"
    assert type(obj).__name__ in repr(obj) and "object at 0x" not in text
    if name in DIRECT_SECRETS:
        assert secrets.PLACEHOLDER in json.dumps(obj.serialize())
        with pytest.raises(SecretInDescriptionError, match="connection"):
            describe(obj)  # what Airflow would store to rebuild it: refused, naming the remedy
        for value in (secret, other(secret)):  # the option under a random name is a secret too
            assert value not in str(redact(f"storage options hold {value}.")), "registered with the secrets masker"
    else:
        spec = describe(obj)
        assert secret not in json.dumps(spec)
        assert repr(rebuild(spec)) == repr(obj), "the description rebuilds the same object"
    if name not in ("wasb",):  # the Wasb URI asks the connection's account of the Azure SDK; covered in its suite
        assert secret not in obj.uri
        from airflow_cdc_provider.lineage import operator_lineage

        # OpenLineage names its datasets from the URIs: no facet carries a secret either
        assert secret not in repr(operator_lineage(obj.uri, obj.uri, None))


def test_a_description_names_what_the_ui_should_show() -> None:
    hook = S3ChangeFeedHook("landing", "orders/")
    assert hook.serialize() == {
        "class": "airflow_cdc_provider.hooks.s3.S3ChangeFeedHook",
        "kwargs": {"bucket": "landing", "prefix": "orders/", "aws_conn_id": "aws_default"},
    }, "a connection id is named even at its default"
    assert repr(hook) == "S3ChangeFeedHook(bucket='landing', prefix='orders/', aws_conn_id='aws_default')"
    delta = DeltaDestination(
        "s3://lake/orders", storage_options={"AWS_REGION": "eu-west-1", "AWS_SECRET_ACCESS_KEY": "k"}
    )
    assert repr(delta) == (
        "DeltaDestination(table_uri='s3://lake/orders', "
        "storage_options={'AWS_REGION': 'eu-west-1', 'AWS_SECRET_ACCESS_KEY': '***'})"
    )


def test_a_redacted_description_is_not_rebuilt_with_the_placeholder_as_credentials() -> None:
    shown_spec = DeltaDestination("s3://lake/orders", storage_options={"AWS_SECRET_ACCESS_KEY": "k"}).serialize()
    with pytest.raises(NotDescribableError, match="redacted"):
        rebuild(shown_spec)


def test_a_deferrable_sensor_refuses_a_secret_it_would_send_to_the_triggerer_at_parse_time(tmp_path: Path) -> None:
    from airflow_cdc_provider.sensors.table_version import TableVersionSensor

    source = DeltaChangeFeedHook(str(tmp_path), storage_options={"AWS_SECRET_ACCESS_KEY": "k"})
    destination = DuckDBDestination(str(tmp_path / "w.duckdb"), "t")
    with pytest.raises(SecretInDescriptionError, match="delta_conn_id"):
        TableVersionSensor(task_id="wait", source=source, destination=destination, deferrable=True)
    TableVersionSensor(task_id="poke", source=source, destination=destination, deferrable=False)  # no triggerer


def _serialized(bucket: str, secret: str) -> tuple[str, str]:
    """The DAG as Airflow's serializer stores it (JSON) and the hash it versions it by."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_cdc_provider.operators.sync import ChangeSyncOperator
    from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

    with DAG(dag_id="cdc_serialized", schedule=None) as dag:
        source = S3ChangeFeedHook(bucket, "orders/", aws_conn_id="aws_cdc")
        destination = DeltaDestination(
            "s3://lake/orders", storage_options={"AWS_SECRET_ACCESS_KEY": secret}, delta_conn_id="delta_cdc"
        )
        NewChangeFilesSensor(task_id="wait", source=source, destination=destination)
        ChangeSyncOperator(task_id="sync", source=source, destination=destination, primary_key="id")
    data = DagSerialization.to_dict(dag)
    return json.dumps(data), SerializedDagModel.hash(data)


def test_the_serialized_dag_names_the_bucket_and_a_changed_bucket_is_a_new_version() -> None:
    text, digest = _serialized("landing-a", "S3cretOfTheLake0001")
    assert '"bucket": "landing-a"' in text and '"aws_conn_id": "aws_cdc"' in text and '"prefix": "orders/"' in text
    assert '"delta_conn_id": "delta_cdc"' in text and "S3cretOfTheLake0001" not in text
    assert "object>" not in text
    again_text, again = _serialized("landing-a", "S3cretOfTheLake0001")
    assert again == digest, "parsing the same file again is the same version"
    _, other = _serialized("landing-b", "S3cretOfTheLake0001")
    assert other != digest, "a changed bucket is a new DAG version"


def test_connection_ids_are_templated_like_the_official_operators() -> None:
    from airflow_cdc_provider.operators.sync import ChangeSyncOperator

    operator = ChangeSyncOperator(
        task_id="sync",
        source=S3ChangeFeedHook("{{ params.bucket }}", "orders/", aws_conn_id="{{ params.aws }}"),
        destination=PostgresDestination("sales.{{ params.table }}", "{{ params.pg }}"),
        primary_key="id",
    )
    operator.render_template_fields({"params": {"bucket": "b", "aws": "aws_prod", "table": "orders", "pg": "pg_prod"}})
    assert (operator.source.bucket, operator.source.aws_conn_id) == ("b", "aws_prod")
    assert operator.destination.uri == "cdc-postgres://pg_prod/sales/orders"
