"""The fan-out as the state machine runs it: `dsjob run` per phase against a real moto server."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import duckdb
import pytest

from dsjob import config, fanout
from dsjob.config import S3Location
from dsjob.errors import InputError
from dsjob.runner import run_from_flags
from dsjob.s3store import CONTENDED_TRIES
from dsjob.sample import write_members_csv
from dsjob.workarea import object_tag
from tests.integration.test_publish_failures import fault_log, job_env
from tests.support.emulator import LocalServe
from tests.support.paths import DSJOB

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from dsjob.config import JobConfig
    from dsjob.job import RunSummary

pytestmark = pytest.mark.integration

IN, OUT = "dsjob-input", "dsjob-output"
P = 3


def s3(aws: LocalServe) -> S3Client:
    return boto3.client("s3", endpoint_url=aws.endpoint, region_name="us-east-1")


def dsjob_run(aws: LocalServe, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DSJOB), "run"],
        env=aws.env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def status(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return parsed


def keys(aws: LocalServe, prefix: str) -> list[str]:
    pages = s3(aws).get_paginator("list_objects_v2").paginate(Bucket=OUT, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def to_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def seed_objects(aws: LocalServe, tmp_path: Path) -> list[bytes]:
    """Three objects sharing rows across objects, with types that differ per object.

    - object c repeats 40 rows of object a, and object b 20 rows of c (cross-object duplicates);
      a's copies in c write `age` as "44.0": DOUBLE-equal to a's "44", textually different;
    - `age` is BIGINT in a and b but DOUBLE in c (some ages "44.5"): the run widens it to DOUBLE;
    - `balance` is blank in every row of b (b infers VARCHAR with no values: it must not vote).
    """
    sample = tmp_path / "sample.csv"
    write_members_csv(sample, 900, seed=11)
    header, *rows = list(csv.reader(sample.read_text(encoding="utf-8").splitlines()))
    age, balance = header.index("age"), header.index("balance")
    a, b, c = rows[:300], rows[300:600], rows[600:]
    for row in a[:50]:
        row[age] = f"  {row[age]} "  # padding the cleaning trims
    for row in c[:30]:
        row[age] = f"{row[age]}.5" if row[age].strip() else row[age]
    c += [
        [*r[:age], f"{r[age].strip()}.0" if r[age].strip() else "", *r[age + 1 :]] for r in a[:40]
    ]
    for row in b:
        row[balance] = ""
    b += [list(r) for r in c[100:120]]
    bodies = [to_csv(header, part) for part in (a, b, c)]
    for name, body in zip(("2027-01-a.csv", "2027-01-b.csv", "2027-01-c.csv"), bodies, strict=True):
        s3(aws).put_object(Bucket=IN, Key=f"raw/members/{name}", Body=body)
    concatenated = to_csv(header, a + b + c)
    s3(aws).put_object(Bucket=IN, Key="raw/all/members.csv", Body=concatenated)
    return bodies


def fetch_parquet(aws: LocalServe, key: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    s3(aws).download_file(OUT, key, str(dest))
    return dest


def run_fanout(aws: LocalServe, run_id: str) -> dict[str, Any]:
    """Every phase as its own `dsjob run` process with the contract's environment."""
    env = {"DSJOB_RUN_ID": run_id, "DSJOB_PARTITIONS": str(P)}
    for name in ("a", "b", "c"):
        proc = dsjob_run(
            aws, DSJOB_PHASE="map", DSJOB_INPUT_KEY=f"raw/members/2027-01-{name}.csv", **env
        )
        assert proc.returncode == 0, proc.stderr
    reduces = []
    for k in range(P):
        proc = dsjob_run(aws, DSJOB_PHASE="reduce", DSJOB_PARTITION=str(k), **env)
        assert proc.returncode == 0, proc.stderr
        reduces.append(status(proc))
    proc = dsjob_run(aws, DSJOB_PHASE="commit", **env)
    return {"proc": proc, "status": status(proc), "reduces": reduces}


def test_fanout_equals_one_run_over_the_concatenated_input(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Map, reduce and commit over 3 objects give the single run's rows, types and counts."""
    seed_objects(local_aws, tmp_path)
    single = dsjob_run(
        local_aws,
        DSJOB_INPUT_KEY="raw/all/members.csv",
        DSJOB_DATASET="members",
        DSJOB_OUTPUT_PREFIX="single/",
        DSJOB_RUN_ID="single-1",
    )
    assert single.returncode == 0, single.stderr
    one = status(single)
    result = run_fanout(local_aws, "fan-1")
    assert result["proc"].returncode == 0, result["proc"].stderr
    fan = result["status"]
    assert fan["status"] == "succeeded"
    assert (fan["rows_in"], fan["rows_out"], fan["dropped"]) == (
        one["rows_in"],
        one["rows_out"],
        one["dropped"],
    )
    assert fan["dropped"]["duplicate"] > 60  # the cross-object copies were found
    # Each reduce task's status line counts the copies it dropped; they add up to the run's.
    reduces = result["reduces"]
    assert all(r["dropped"] == {"duplicate": r["rows_in"] - r["rows_out"]} for r in reduces)
    assert sum(r["dropped"]["duplicate"] for r in reduces) == one["dropped"]["duplicate"]
    assert sum(r["rows_out"] for r in reduces) == one["rows_out"]
    single_key = next(k for k in keys(local_aws, "single/") if k.endswith(".parquet"))
    ref = fetch_parquet(local_aws, single_key, tmp_path / "single.parquet")
    manifest = json.loads(
        s3(local_aws).get_object(Bucket=OUT, Key="processed/manifests/fan-1.json")["Body"].read()
    )
    parts = [o["key"] for o in manifest["outputs"]]
    assert parts == [k for k in keys(local_aws, "processed/members_") if k.endswith(".parquet")]
    assert all("_fan-1/part-" in k for k in parts)
    local = [fetch_parquet(local_aws, k, tmp_path / "fan" / k.rsplit("/", 1)[-1]) for k in parts]
    con = duckdb.connect()
    con.execute("CREATE TABLE one AS SELECT * FROM read_parquet(?)", [str(ref)])
    con.execute("CREATE TABLE fan AS SELECT * FROM read_parquet(?)", [[str(p) for p in local]])
    assert con.execute("DESCRIBE fan").fetchall() == con.execute("DESCRIBE one").fetchall()
    assert (
        dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE fan)").fetchall())["age"]
        == "DOUBLE"
    )
    only_one = "SELECT count(*) FROM (SELECT * FROM one EXCEPT ALL SELECT * FROM fan)"
    only_fan = "SELECT count(*) FROM (SELECT * FROM fan EXCEPT ALL SELECT * FROM one)"
    assert con.execute(only_one).fetchone() == (0,), "rows of the single run missing"
    assert con.execute(only_fan).fetchone() == (0,), "rows the single run does not have"
    assert con.execute("SELECT count(*) FROM fan").fetchone() == (one["rows_out"],)
    assert manifest["counts"] == {
        "rows_in": one["rows_in"],
        "rows_out": one["rows_out"],
        "dropped": one["dropped"],
    }
    assert sum(o["records"] for o in manifest["outputs"]) == one["rows_out"]
    assert keys(local_aws, "processed/_work/") == []
    pointer = json.loads(
        s3(local_aws).get_object(Bucket=OUT, Key="processed/current/members.json")["Body"].read()
    )
    assert pointer["manifest"] == "processed/manifests/fan-1.json"
    assert pointer["outputs"] == parts


@pytest.fixture
def emulator(local_aws: LocalServe, monkeypatch: pytest.MonkeyPatch) -> LocalServe:
    """The seeded emulator, with this process pointed at it for in-process phases."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint)
    return local_aws


def in_process(**flags: str) -> RunSummary:
    """One phase in this process, configured exactly as `dsjob run` would be (SSM + flags)."""
    return run_from_flags({"partitions": str(P), **flags}, progress=False)


def resolved(**flags: str) -> JobConfig:
    from dsjob.aws import Clients  # noqa: PLC0415

    ssm = Clients().ssm
    return config.resolve(
        {"partitions": str(P), **flags}, os.environ, lambda p: config.read_parameters(ssm, p)
    )


def test_commit_with_a_missing_reduce_fails_and_publishes_nothing(
    emulator: LocalServe, tmp_path: Path
) -> None:
    """A commit before every partition is reduced fails (exit 3) naming it; nothing is published."""
    seed_objects(emulator, tmp_path)
    for name in ("a", "b", "c"):
        in_process(
            phase="map", **{"run-id": "fan-2", "input-key": f"raw/members/2027-01-{name}.csv"}
        )
    for k in (0, 2):
        in_process(phase="reduce", partition=str(k), **{"run-id": "fan-2"})
    with pytest.raises(InputError, match="partition 1 of 3 has no reduce result") as caught:
        in_process(phase="commit", **{"run-id": "fan-2"})
    assert caught.value.exit_code == 3
    assert keys(emulator, "processed/manifests/") == []
    assert keys(emulator, "processed/current/") == []
    assert keys(emulator, "processed/_work/fan-2/maps/")  # nothing was cleaned up either


def test_run_all_reruns_are_idempotent_and_a_new_run_prunes_the_old(
    emulator: LocalServe, tmp_path: Path
) -> None:
    """One dataset: a fan-out replaces a single run's output; reruns publish once; new ids prune."""
    from dsjob.aws import Clients  # noqa: PLC0415

    seed_objects(emulator, tmp_path)
    single = in_process(**{"run-id": "single-3"})  # the seeded raw/members.csv: dataset members
    assert single.outputs[0].key.startswith("processed/members_")
    prefix = S3Location(IN, "raw/members/")
    first = fanout.run_all(resolved(**{"run-id": "fan-3"}), Clients(), prefix)
    assert first.status == "succeeded"
    assert single.outputs[0].key not in keys(emulator, "processed/")  # keep-outputs 0
    old_parts = [o.key for o in first.outputs]
    assert old_parts == [k for k in keys(emulator, "processed/members_") if "_fan-3/" in k]
    again = fanout.run_all(resolved(**{"run-id": "fan-3"}), Clients(), prefix)
    assert again.status == "already-published"
    assert (again.rows_out, [o.key for o in again.outputs]) == (first.rows_out, old_parts)
    newer = fanout.run_all(resolved(**{"run-id": "fan-4"}), Clients(), prefix)
    assert newer.rows_out == first.rows_out
    assert keys(emulator, "processed/members_") == sorted(o.key for o in newer.outputs)
    assert keys(emulator, "processed/_work/") == []


def test_a_file_left_by_a_killed_map_attempt_is_replaced(
    emulator: LocalServe, tmp_path: Path
) -> None:
    """A partition file from an attempt that never wrote its record is replaced, not trusted."""
    seed_objects(emulator, tmp_path)
    key = "raw/members/2027-01-a.csv"
    stale = f"processed/_work/fan-5/part=0/{object_tag(key)}.parquet"
    s3(emulator).put_object(Bucket=OUT, Key=stale, Body=b"half-written by a killed attempt")
    summary = in_process(phase="map", **{"run-id": "fan-5", "input-key": key})
    record = json.loads(
        s3(emulator)
        .get_object(Bucket=OUT, Key=summary.manifest_uri.split(f"{OUT}/", 1)[1])["Body"]
        .read()
    )
    body = s3(emulator).get_object(Bucket=OUT, Key=stale)["Body"].read()
    assert body.startswith(b"PAR1")
    assert hashlib.sha256(body).hexdigest() == record["files"]["0"]["sha256"]


def test_an_empty_prefix_is_refused_naming_it(emulator: LocalServe) -> None:
    """A hollow prefix (a folder marker, a 0-byte object) fails (exit 3) before any task runs."""
    from dsjob.aws import Clients  # noqa: PLC0415

    s3(emulator).put_object(Bucket=IN, Key="raw/empty/", Body=b"")
    s3(emulator).put_object(Bucket=IN, Key="raw/empty/2027-01-a.csv", Body=b"")
    with pytest.raises(
        InputError,
        match=r"no data objects under s3://dsjob-input/raw/empty/ "
        r"\(skipped: 1 folder marker, 1 zero-size object\): nothing to fan out",
    ) as caught:
        fanout.run_all(resolved(**{"run-id": "fan-6"}), Clients(), S3Location(IN, "raw/empty/"))
    assert caught.value.exit_code == 3
    assert keys(emulator, "processed/_work/") == []


def test_a_zero_size_object_given_to_a_map_task_is_refused(emulator: LocalServe) -> None:
    """A map task handed a 0-byte object exits 3 naming it (the workflow filters them out)."""
    s3(emulator).put_object(Bucket=IN, Key="raw/members/empty.csv", Body=b"")
    proc = dsjob_run(
        emulator, DSJOB_PHASE="map", DSJOB_RUN_ID="fan-7", DSJOB_INPUT_KEY="raw/members/empty.csv"
    )
    assert proc.returncode == 3
    assert "s3://dsjob-input/raw/members/empty.csv is empty (0 bytes)" in proc.stderr
    assert status(proc)["status"] == "failed"


def test_a_part_changed_after_its_reduce_stops_the_commit(
    emulator: LocalServe, tmp_path: Path
) -> None:
    """A part overwritten between reduce and commit fails the commit (exit 3); no manifest."""
    seed_objects(emulator, tmp_path)
    for name in ("a", "b", "c"):
        in_process(
            phase="map", **{"run-id": "fan-8", "input-key": f"raw/members/2027-01-{name}.csv"}
        )
    parts = [
        o.key
        for k in range(P)
        for o in in_process(phase="reduce", partition=str(k), **{"run-id": "fan-8"}).outputs
    ]
    s3(emulator).put_object(Bucket=OUT, Key=parts[0], Body=b"PAR1 not the reduced rows")
    with pytest.raises(InputError, match=f"part s3://{OUT}/{parts[0]} changed") as caught:
        in_process(phase="commit", **{"run-id": "fan-8"})
    assert caught.value.exit_code == 3
    assert keys(emulator, "processed/manifests/") == []


def test_dsjob_local_fanout_runs_every_phase_against_the_emulator() -> None:
    """`dsjob local fanout` seeds objects sharing rows and commits one deduplicated dataset."""
    proc = subprocess.run(
        [str(DSJOB), "local", "fanout", "--rows", "600", "--objects", "3", "--partitions", "2"],
        env={**os.environ, "DSJOB_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    st = status(proc)
    assert st["status"] == "succeeded"
    assert st["rows_in"] == 600 + 2 * 20  # each later object repeats a tenth of the one before
    assert st["dropped"]["duplicate"] >= 40
    assert st["rows_in"] - st["rows_out"] == sum(st["dropped"].values())
    assert st["manifest"].endswith(f"/manifests/{st['run_id']}.json")
    assert len(st["outputs"]) == 2
    assert all("/part-0000" in uri for uri in st["outputs"])


def test_each_fan_out_task_writes_its_own_status_object(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """Map, reduce and commit of one run leave distinct status objects; the failed one speaks."""
    seed_objects(local_aws, tmp_path)
    env = {"DSJOB_RUN_ID": "fan-9", "DSJOB_PARTITIONS": str(P)}
    for name in ("a", "b"):
        key = f"raw/members/2027-01-{name}.csv"
        proc = dsjob_run(local_aws, DSJOB_PHASE="map", DSJOB_INPUT_KEY=key, **env)
        assert proc.returncode == 0, proc.stderr
    reduce = dsjob_run(local_aws, DSJOB_PHASE="reduce", DSJOB_PARTITION="0", **env)
    assert reduce.returncode == 0, reduce.stderr
    commit = dsjob_run(local_aws, DSJOB_PHASE="commit", **env)  # partitions 1 and 2 missing
    assert commit.returncode == 3, commit.stderr
    assert keys(local_aws, "processed/status/") == [
        "processed/status/fan-9/commit.json",
        "processed/status/fan-9/map/raw/members/2027-01-a.csv.json",
        "processed/status/fan-9/map/raw/members/2027-01-b.csv.json",
        "processed/status/fan-9/reduce-0.json",
    ]

    def read(key: str) -> dict[str, Any]:
        body = s3(local_aws).get_object(Bucket=OUT, Key=f"processed/status/fan-9/{key}")["Body"]
        parsed: dict[str, Any] = json.loads(body.read())
        return parsed

    # The commit's own failure, not a map's line. Only the maps name the dataset (it is
    # unset, so the folder's name); the reduce and commit tasks learn it from their records.
    assert read("commit.json") == status(commit)
    assert read("reduce-0.json") == status(reduce)
    assert read("map/raw/members/2027-01-a.csv.json")["dataset"] == "members"
    assert read("map/raw/members/2027-01-a.csv.json")["status"] == "succeeded"
    shown = subprocess.run(
        [str(DSJOB), "runs", "show", "fan-9"],
        env=local_aws.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "status    failed (exit 3)" in shown.stdout
    assert "error     commit: cannot commit run fan-9: partition 1, 2 of 3" in shown.stdout
    assert "task      reduce-0: succeeded" in shown.stdout
    listing = subprocess.run(
        [str(DSJOB), "runs", "ls"],
        env=local_aws.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = {line.split()[0]: line.split()[1:3] for line in listing.stdout.splitlines()[1:]}
    assert rows == {"fan-9": ["failed", "members"]}  # the dataset a map's status names


def test_reduce_counts_that_do_not_add_up_stop_the_commit(
    emulator: LocalServe, tmp_path: Path
) -> None:
    """A reduce record whose counts disagree with the maps' stops the commit (exit 3)."""
    seed_objects(emulator, tmp_path)
    for name in ("a", "b", "c"):
        in_process(
            phase="map", **{"run-id": "fan-9", "input-key": f"raw/members/2027-01-{name}.csv"}
        )
    for k in range(P):
        in_process(phase="reduce", partition=str(k), **{"run-id": "fan-9"})
    key = "processed/_work/fan-9/reduce/part=0.json"
    record = json.loads(s3(emulator).get_object(Bucket=OUT, Key=key)["Body"].read())
    record["dropped"]["duplicate"] += 1  # a record no reduce task could have written
    s3(emulator).put_object(Bucket=OUT, Key=key, Body=json.dumps(record).encode())
    with pytest.raises(InputError, match="do not add up") as caught:
        in_process(phase="commit", **{"run-id": "fan-9"})
    assert caught.value.exit_code == 3
    assert keys(emulator, "processed/manifests/") == []


def test_a_409_on_a_work_file_is_written_again_as_the_publish_writes_are(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A map task's work file answered 409 once is sent again; the task succeeds.

    S3 answers a conditional PUT that met a concurrent write to its key with 409
    ConditionalRequestConflict and asks for it to be sent again (S3 API Reference,
    PutObject, If-None-Match). moto 5.2.5 never answers 409: s3faults injects it.
    """
    seed_objects(local_aws, tmp_path)
    fault = "conflict:PutObject:_work/fan-409/part:1"
    env = job_env(local_aws, tmp_path, fault, DSJOB_PHASE="map", DSJOB_RUN_ID="fan-409")
    key = "raw/members/2027-01-a.csv"
    proc = subprocess.run(
        [str(DSJOB), "run"],
        env={**env, "DSJOB_INPUT_KEY": key, "DSJOB_PARTITIONS": str(P)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "409 PutObject _work/fan-409/part #1" in fault_log(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert status(proc)["status"] == "succeeded"
    assert keys(local_aws, "processed/_work/fan-409/maps/") == [
        f"processed/_work/fan-409/maps/{object_tag(key)}.json"
    ]


def test_a_work_file_that_stays_contended_exits_5(local_aws: LocalServe, tmp_path: Path) -> None:
    """409 on every try of a work file: sent CONTENDED_TRIES times, then exit 5, no record."""
    seed_objects(local_aws, tmp_path)
    fault = "conflict:PutObject:_work/fan-409s/part:1+"
    env = job_env(local_aws, tmp_path, fault, DSJOB_PHASE="map", DSJOB_RUN_ID="fan-409s")
    proc = subprocess.run(
        [str(DSJOB), "run"],
        env={**env, "DSJOB_INPUT_KEY": "raw/members/2027-01-a.csv", "DSJOB_PARTITIONS": str(P)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fault_log(tmp_path).count("409 PutObject _work/fan-409s/part") == CONTENDED_TRIES
    assert proc.returncode == 5, proc.stderr
    assert "409 ConditionalRequestConflict" in status(proc)["error"]
    assert keys(local_aws, "processed/_work/fan-409s/maps/") == []


def test_fan_out_tasks_keep_their_work_dir_only_when_asked(
    emulator: LocalServe, tmp_path: Path
) -> None:
    """DSJOB_KEEP_WORK=1 keeps a map or reduce task's work dir under the work root, as for a run.

    Without it the task's dir is gone, and a kept one is left alone.
    """
    bodies = seed_objects(emulator, tmp_path)
    root = tmp_path / "work-root"
    root.mkdir()
    env = {"DSJOB_RUN_ID": "fan-keep", "DSJOB_PARTITIONS": "1", "DSJOB_WORK_ROOT": str(root)}
    key = "raw/members/2027-01-a.csv"
    kept = dsjob_run(emulator, DSJOB_PHASE="map", DSJOB_INPUT_KEY=key, DSJOB_KEEP_WORK="1", **env)
    assert kept.returncode == 0, kept.stderr
    (map_dir,) = root.iterdir()
    assert map_dir.name.startswith("dsjob-map-fan-keep-")
    assert bodies[0] in [p.read_bytes() for p in map_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in map_dir.rglob("*")), sorted(map_dir.rglob("*"))
    assert str(map_dir) in kept.stderr  # the log says where it is

    other = dsjob_run(
        emulator, DSJOB_PHASE="map", DSJOB_INPUT_KEY="raw/members/2027-01-b.csv", **env
    )
    assert other.returncode == 0, other.stderr
    assert list(root.iterdir()) == [map_dir]  # the second task's dir is gone, the kept one stays

    reduce = dsjob_run(
        emulator, DSJOB_PHASE="reduce", DSJOB_PARTITION="0", DSJOB_KEEP_WORK="1", **env
    )
    assert reduce.returncode == 0, reduce.stderr
    (reduce_dir,) = (p for p in root.iterdir() if p != map_dir)
    assert reduce_dir.name.startswith("dsjob-reduce-fan-keep-")
    assert any(p.suffix == ".parquet" for p in reduce_dir.rglob("*")), sorted(reduce_dir.rglob("*"))
