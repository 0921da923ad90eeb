"""The five remote file stores against real local servers: each behaves exactly like the local folder.

One suite, parametrized over the stores (``store``, from ``tests/stores.py``: moto's S3 server, Azurite for
Azure Blob and the SAS landing zone, gcp-storage-emulator, an in-process asyncssh SFTP server). One more test
runs against Debian's OpenSSH sshd when it is installed and we are root.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import io
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.files import FileChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, default_stream_id, run_sync
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor
from airflow_cdc_provider.triggers.files import NewChangeFilesTrigger
from tests.store_servers import container_sas_url, sftp_store
from tests.stores import BASE, BUCKET, Store, connection, free_port, stop_group, wait_for_port

TABLE = "items"
DUCKDB = "airflow_cdc_provider.destinations.duckdb.DuckDBDestination"


# -- change files and the model ----------------------------------------------------------------------


def change_file(name: str, rows: list[dict[str, Any]]) -> bytes:
    """``rows`` (``op`` is the change type) as the bytes of a CSV, JSON Lines (gz) or Parquet file."""
    records = [{"id": r["id"], "name": r.get("name"), "n": r.get("n"), "_change_request_type": r["op"]} for r in rows]
    if name.endswith(".parquet"):
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), sink)
        return sink.getvalue()
    if name.endswith(".jsonl.gz"):
        return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode(), mtime=0)
    lines = ["id,name,n,_change_request_type"]
    lines += [
        ",".join("" if r[c] is None else str(r[c]) for c in ("id", "name", "n", "_change_request_type"))
        for r in records
    ]
    return ("\n".join(lines) + "\n").encode()


def apply_to_model(model: dict[int, tuple[Any, Any]], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row["op"] == "d":
            model.pop(row["id"], None)
        else:
            model[row["id"]] = (row.get("name"), row.get("n"))


def read_items(database: Path) -> dict[int, tuple[Any, Any]]:
    if not database.exists():
        return {}
    with duckdb.connect(str(database), read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [TABLE]).fetchone()[
            0
        ]:  # type: ignore[index]
            return {}
        return {row[0]: (row[1], row[2]) for row in con.execute(f"SELECT id, name, n FROM {TABLE}").fetchall()}


# Four files over two runs: inserts, updates and deletes, in three formats.
RUN_1 = [
    ("001_init.csv", [{"op": "u", "id": i, "name": f"n{i}", "n": i} for i in range(1, 6)]),
    (
        "002_changes.jsonl.gz",
        [
            {"op": "u", "id": 2, "name": "two", "n": 20},
            {"op": "d", "id": 3},
            {"op": "u", "id": 6, "name": "six", "n": 6},
        ],
    ),
]
RUN_2 = [
    (
        "003_more.parquet",
        [
            {"op": "d", "id": 1},
            {"op": "u", "id": 6, "name": "SIX", "n": 60},
            {"op": "u", "id": 7, "name": "seven", "n": 7},
        ],
    ),
    (
        "sub/004_last.csv",
        [
            {"op": "d", "id": 7},
            {"op": "u", "id": 2, "name": "TWO", "n": 200},
            {"op": "u", "id": 3, "name": "back", "n": 3},
        ],
    ),
]


@pytest.fixture
def destination(tmp_path: Path) -> DuckDBDestination:
    return DuckDBDestination(str(tmp_path / "dest.duckdb"), TABLE)


SPEC_KEY = ("id",)


def sync(source: FileChangeFeedHook, destination: DuckDBDestination) -> Any:
    return run_sync(source, destination, SyncSpec(default_stream_id(source, destination), SPEC_KEY))


# -- the suite ---------------------------------------------------------------------------------------


def check_two_runs_equal_the_model(store: Store, destination: DuckDBDestination) -> None:
    model: dict[int, tuple[Any, Any]] = {}
    for files, expected_files in ((RUN_1, 2), (RUN_2, 2), ([], 0)):
        for name, rows in files:
            store.put_in_order(name, change_file(name, rows))
            apply_to_model(model, rows)
        summary = sync(store.hook(), destination)
        assert summary.files == expected_files
        assert read_items(Path(destination.path)) == model
    assert model == {2: ("TWO", 200), 3: ("back", 3), 4: ("n4", 4), 5: ("n5", 5), 6: ("SIX", 60)}


def test_changes_over_files_and_two_runs_equal_the_model(store: Store, destination: DuckDBDestination) -> None:
    check_two_runs_equal_the_model(store, destination)


@pytest.mark.parametrize("applied_files", ["archive", "delete"])
def test_applied_files_are_archived_or_deleted_once_committed(
    store: Store, destination: DuckDBDestination, applied_files: str
) -> None:
    model: dict[int, tuple[Any, Any]] = {}
    for name, rows in RUN_1:
        store.put_in_order(name, change_file(name, rows))
        apply_to_model(model, rows)
    sync(store.hook(), destination)  # applied, but not tidied: as if the run stopped right after its commit
    assert sorted(file.path for file in store.hook().list_files()) == [name for name, _ in RUN_1]
    for name, rows in RUN_2:
        store.put_in_order(name, change_file(name, rows))
        apply_to_model(model, rows)

    summary = sync(store.tidying_hook(applied_files), destination)

    assert summary.files == len(RUN_2)  # the files left behind are tidied, not applied again
    assert read_items(Path(destination.path)) == model
    every_file = sorted(name for name, _ in RUN_1 + RUN_2)
    left = sorted(file.path for file in store.hook().list_files())
    assert left == ([f"_applied/{name}" for name in every_file] if applied_files == "archive" else [])
    assert sync(store.hook(), destination).files == 0


def test_a_file_rewritten_after_the_listing_is_not_tidied(store: Store, destination: DuckDBDestination) -> None:
    name, rows = RUN_1[0]
    store.put_in_order(name, change_file(name, rows))
    hook = store.tidying_hook("delete")
    pull = hook.pull(None, SPEC_KEY)
    store.put_in_order(name, change_file(name, rows[:2]))  # a new version lands before the tidy-up
    assert pull.after_commit is not None
    assert "left 1 rewritten since listed" in pull.after_commit()
    assert [file.path for file in store.hook().list_files()] == [name]


def test_late_file_with_an_older_last_modified_is_applied_exactly_once(
    store: Store, destination: DuckDBDestination
) -> None:
    if not store.sets_modified:
        pytest.skip(f"{store.name}: the server keeps its own Last-Modified, so a late file cannot be back-dated")
    early, later = (
        ("a.csv", [{"op": "u", "id": 1, "name": "a", "n": 1}]),
        ("c.csv", [{"op": "u", "id": 2, "name": "c", "n": 2}]),
    )
    store.put(early[0], change_file(*early), BASE)
    store.put(later[0], change_file(*later), BASE + dt.timedelta(minutes=10))
    assert sync(store.hook(), destination).files == 2
    # A multipart upload that started before "c.csv" finishes now: its last-modified is older than the watermark.
    late = ("b.csv", [{"op": "u", "id": 3, "name": "late", "n": 3}, {"op": "d", "id": 1}])
    store.put(late[0], change_file(*late), BASE + dt.timedelta(minutes=5))
    listed = {file.path: file.modified for file in store.hook().list_files()}
    assert listed["a.csv"] < listed["b.csv"] < listed["c.csv"]  # the store reports the back-dated time
    assert sync(store.hook(), destination).files == 1
    assert sync(store.hook(), destination).files == 0
    assert read_items(Path(destination.path)) == {2: ("c", 2), 3: ("late", 3)}


def test_sensor_says_false_then_true(store: Store, destination: DuckDBDestination) -> None:
    sensor = NewChangeFilesSensor(task_id="wait", source=store.hook(), destination=destination, deferrable=False)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    store.put_in_order("001.csv", change_file("001.csv", [{"op": "u", "id": 1, "name": "a", "n": 1}]))
    assert sensor.poke({}) is True  # type: ignore[arg-type]
    sync(store.hook(), destination)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    store.put_in_order("002.csv", change_file("002.csv", [{"op": "d", "id": 1}]))
    assert sensor.poke({}) is True  # type: ignore[arg-type]


async def _first_event(trigger: NewChangeFilesTrigger, seconds: float = 30) -> Any:
    async def first() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), seconds)


def test_deferrable_sensor_defers_and_its_trigger_fires(store: Store, destination: DuckDBDestination) -> None:
    sensor = NewChangeFilesSensor(
        task_id="wait", source=store.hook(), destination=destination, deferrable=True, poke_interval=0.2, timeout=60
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, NewChangeFilesTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert trigger.serialize() == (
        "airflow_cdc_provider.triggers.files.NewChangeFilesTrigger",
        {
            "source": {"class": store.hook_class, "kwargs": store.source_kwargs},
            "destination": {
                "class": DUCKDB,
                "kwargs": {"path": destination.path, "table": TABLE},
            },
            "stream_id": None,
            "poke_interval": 0.2,
            "timeout": 60.0,
        },
    )

    async def land_later() -> Any:
        async def land() -> None:
            await asyncio.sleep(0.6)  # the trigger polls, finds nothing, polls again
            await asyncio.to_thread(store.put_in_order, "001.csv", change_file("001.csv", [{"op": "u", "id": 1}]))

        landing = asyncio.create_task(land())
        event = await _first_event(trigger)
        await landing
        return event

    event = asyncio.run(land_later())
    assert event.payload == {"status": "success", "pending": 1, "files": ["001.csv"]}
    assert sensor.execute_complete({}, event.payload) is None  # type: ignore[arg-type]


def test_wrong_credentials_fail_with_a_clear_error_and_apply_nothing(
    store: Store, destination: DuckDBDestination
) -> None:
    store.put_in_order("001.csv", change_file("001.csv", [{"op": "u", "id": 1, "name": "a", "n": 1}]))
    bad = store.bad_hook()
    with pytest.raises(Exception, match=store.auth_error):
        sync(bad, destination)
    assert read_items(Path(destination.path)) == {}
    assert destination.read_checkpoint(default_stream_id(store.hook(), destination)) is None
    # The deferrable sensor fails at once with the cause: wrong credentials are not worth retrying.
    sensor = NewChangeFilesSensor(task_id="wait", source=bad, destination=destination, deferrable=False)
    with pytest.raises(Exception, match=store.auth_error):
        sensor.poke({})  # type: ignore[arg-type]
    trigger = NewChangeFilesTrigger(
        source={"class": store.hook_class, "kwargs": store.bad_kwargs},
        destination={"class": DUCKDB, "kwargs": {"path": destination.path, "table": TABLE}},
        poke_interval=0.1,
        timeout=30,
    )
    event = asyncio.run(_first_event(trigger))
    assert event.payload["status"] == "error"
    assert re.search(store.auth_error, event.payload["message"])


# -- store specifics ---------------------------------------------------------------------------------


def test_hooks_do_no_io_when_built() -> None:
    from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
    from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook
    from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
    from airflow_cdc_provider.hooks.sftp import SFTPChangeFeedHook
    from airflow_cdc_provider.hooks.wasb import WasbChangeFeedHook

    # None of these connections exists: building the hooks (as DAG parsing does) must not look them up.
    hooks = [
        S3ChangeFeedHook("b", "p", aws_conn_id="missing"),
        WasbChangeFeedHook("c", "p", wasb_conn_id="missing"),
        LandingZoneChangeFeedHook("p", landing_zone_conn_id="missing"),
        GCSChangeFeedHook("b", "p", gcp_conn_id="missing"),
        SFTPChangeFeedHook("/p", sftp_conn_id="missing"),
    ]
    # connection ids are templated, as the official operators' are
    assert [tuple(hook.template_fields) for hook in hooks] == [
        ("bucket", "prefix", "aws_conn_id"),
        ("container", "prefix", "wasb_conn_id"),
        ("prefix", "landing_zone_conn_id"),
        ("bucket", "prefix", "gcp_conn_id"),
        ("path", "sftp_conn_id"),
    ]


def test_landing_zone_sas_is_masked_and_kept_out_of_the_uri(
    azurite: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook, LandingZoneSasError

    sas_url = container_sas_url(azurite)
    token = sas_url.split("?", 1)[1]
    # The other accepted form: the container URL as host, the SAS token alone as password.
    conn = connection(
        monkeypatch, "cdc_lz_split", conn_type="cdc_landing_zone", host=sas_url.split("?")[0], password="?" + token
    )
    hook = LandingZoneChangeFeedHook("feed", landing_zone_conn_id=conn)
    assert hook.uri == f"{azurite['endpoint']}/{BUCKET}/feed"
    assert list(hook.list_files()) == []
    redacted = _secrets_masker().redact(f"listing {sas_url} with {token}")
    assert token not in redacted and "sig=" not in redacted.replace("sig=***", "")
    empty = connection(monkeypatch, "cdc_lz_empty", conn_type="cdc_landing_zone", host=sas_url.split("?")[0])
    with pytest.raises(LandingZoneSasError, match="SAS URL"):
        LandingZoneChangeFeedHook("feed", landing_zone_conn_id=empty).list_files()


# -- Debian's OpenSSH sshd ---------------------------------------------------------------------------

SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(scope="module")
def openssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not SSHD.exists():
        pytest.skip("OpenSSH sshd is not installed (make servers installs it when run as root with apt)")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root here (privilege separation)")
    import pwd

    import asyncssh

    home = tmp_path_factory.mktemp("sshd")
    root = home / "files"
    root.mkdir()
    host_key, client_key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    (home / "host_key").write_bytes(host_key.export_private_key("openssh"))
    (home / "host_key").chmod(0o600)
    (home / "authorized_keys").write_bytes(client_key.export_public_key())
    port = free_port()
    (home / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {home / 'host_key'}\nPidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(home / "sshd_config")], start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        yield {
            "root": root,
            "port": port,
            "key": client_key.export_private_key("openssh").decode(),
            "stranger_key": asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode(),
            "login": pwd.getpwuid(os.geteuid()).pw_name,
        }
    finally:
        stop_group(process)


def test_openssh_sshd_two_runs_equal_the_model(
    openssh_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, destination: DuckDBDestination
) -> None:
    store = sftp_store(
        openssh_server,
        monkeypatch,
        f"feed-{uuid.uuid4().hex[:10]}",
        remote_root=str(openssh_server["root"]),
        login=openssh_server["login"],
    )
    check_two_runs_equal_the_model(store, destination)
    with pytest.raises(Exception, match=store.auth_error):
        sync(store.bad_hook(), destination)
