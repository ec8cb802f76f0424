"""The synthesized workflow running the real job: every ECS task is a `dsjob run` process.

The emulator's ``jobs`` mode (sfn_emulator.py, sfn_jobs.py) starts the job for each
RunTask with the task definition's environment plus the overrides the state
machine passed, against the same moto server, and reports its exit code and output
back through DescribeTasks and the awslogs stream. So here the definition's
environment contract (phase, run id, partitions, keys, the status object's key)
meets the job's own reading of it, and the fan-out's result is checked against
one `dsjob run` over the concatenated input.

moto's distributed Map runs its items inline, on threads of the emulator (no child
executions; MaxConcurrency workers, so the three map tasks run at once, as they
would on AWS). It does not apply ToleratedFailurePercentage: a map task that
failed would not stop the reduce and commit here (AWS fails the map first; that
path is checked on the template in test_stack.py). Every object here maps
cleanly, so the result does not depend on that gap.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from dsjob.sample import write_members_csv
from tests.infra.emulated import Emulated, serve
from tests.support.credentials import FAKE_ENV
from tests.support.paths import DSJOB

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.infra

PREFIX = "batch/members/"
P = 3
# Under the shared CI load a phase takes seconds: 7 tasks, 3 of them at once.
EXECUTION_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def emulated(synth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    """The emulator in jobs mode with the synthesized workflow and its SSM parameters."""
    with serve(synth.resources, tmp_path_factory.mktemp("sfn-jobs"), "jobs") as emulated:
        yield emulated


def to_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


def seed(emulated: Emulated, tmp_path: Path) -> dict[str, bytes]:
    """Three objects sharing rows across objects, an empty object and a folder marker.

    - b repeats 30 rows of a, with the names padded (equal only once cleaned);
    - c repeats 25 rows of b and 10 of a exactly (a row in three objects at once);
    - `age` is whole in a and b, but c has halves: the run must widen it to DOUBLE.
    """
    sample = tmp_path / "sample.csv"
    write_members_csv(sample, 600, seed=23)
    header, *rows = list(csv.reader(sample.read_text(encoding="utf-8").splitlines()))
    name, age = header.index("first_name"), header.index("age")
    a, b, c = rows[:200], rows[200:400], rows[400:]
    b += [[*r[:name], f"  {r[name]} ", *r[name + 1 :]] for r in a[:30]]
    for row in c[:40]:
        row[age] = f"{row[age]}.5" if row[age].strip() else row[age]
    c += [list(r) for r in b[:25]] + [list(r) for r in a[:10]]
    objects = {
        f"{PREFIX}2027-01-a.csv": to_csv(header, a),
        f"{PREFIX}2027-01-b.csv": to_csv(header, b),
        f"{PREFIX}2027-01-c.csv": to_csv(header, c),
    }
    for key, body in {**objects, PREFIX: b"", f"{PREFIX}empty.csv": b""}.items():
        emulated.s3.put_object(Bucket=emulated.bucket("input"), Key=key, Body=body)
    emulated.s3.put_object(
        Bucket=emulated.bucket("input"), Key="all/members.csv", Body=to_csv(header, a + b + c)
    )
    return objects


def task_environment(synth) -> dict[str, str]:
    """The job container's environment in the task definition (DSJOB_PARAM_PREFIX)."""
    [definition] = synth.of_type("AWS::ECS::TaskDefinition").values()
    [container] = definition["Properties"]["ContainerDefinitions"]
    return {v["Name"]: v["Value"] for v in container.get("Environment", [])}


def single_run(emulated: Emulated, synth, **env: str) -> dict[str, Any]:
    """One `dsjob run` over the concatenated input, configured like a task (SSM + env)."""
    proc = subprocess.run(
        [str(DSJOB), "run"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSJOB_"))},
            **FAKE_ENV,
            **task_environment(synth),
            "AWS_ENDPOINT_URL": emulated.endpoint,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    status: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return status


def started_tasks(emulated: Emulated, run_id: str) -> list[dict[str, Any]]:
    """The run's ECS tasks as DescribeTasks answers, each with its override environment."""
    cluster = "ds-preprocessing-dev"
    arns = emulated.ecs.list_tasks(cluster=cluster)["taskArns"]
    found = []
    for task in emulated.ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []:
        [override] = task["overrides"]["containerOverrides"]
        env = {v["name"]: v["value"] for v in override["environment"]}
        if env["DSJOB_RUN_ID"] == run_id:
            found.append({**task, "env": env})
    return found


def last_log_line(emulated: Emulated, task: dict[str, Any]) -> str:
    """The last event of the task's awslogs stream (job/job/<task id>)."""
    events = emulated.logs.get_log_events(
        logGroupName="/ecs/ds-preprocessing-dev",
        logStreamName=f"job/job/{task['taskArn'].rsplit('/', 1)[-1]}",
        limit=1,
        startFromHead=False,
    )["events"]
    return str(events[-1]["message"])


def read_json(emulated: Emulated, key: str) -> dict[str, Any]:
    body = emulated.s3.get_object(Bucket=emulated.bucket("output"), Key=key)["Body"].read()
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def download(emulated: Emulated, keys: list[str], dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, key in enumerate(keys):
        path = dest / f"{i}.parquet"
        emulated.s3.download_file(emulated.bucket("output"), key, str(path))
        paths.append(str(path))
    return paths


def test_fanout_through_the_workflow_equals_one_run_over_the_concatenation(
    emulated: Emulated, synth, tmp_path: Path
) -> None:
    """Map, reduce and commit run as ECS tasks give the single run's rows, types and counts."""
    seed(emulated, tmp_path)
    one = single_run(
        emulated,
        synth,
        DSJOB_INPUT_KEY="all/members.csv",
        DSJOB_OUTPUT_PREFIX="single/",
        DSJOB_DATASET="members",
        DSJOB_RUN_ID="single-ref",
    )
    started = time.monotonic()
    result = emulated.run(
        "fan-real",
        {"inputPrefix": PREFIX, "dataset": "members", "partitions": P},
        timeout=EXECUTION_TIMEOUT_S,
    )
    print(f"fan-out execution: {time.monotonic() - started:.1f} s, load {os.getloadavg()}")
    assert result["status"] == "SUCCEEDED", result

    tasks = started_tasks(emulated, "fan-real")
    phases = sorted(t["env"]["DSJOB_PHASE"] for t in tasks)
    assert phases == ["commit", *["map"] * 3, *["reduce"] * P]
    # The folder marker and the empty object never became map tasks.
    assert sorted(
        t["env"]["DSJOB_INPUT_KEY"] for t in tasks if t["env"]["DSJOB_PHASE"] == "map"
    ) == [f"{PREFIX}2027-01-{x}.csv" for x in "abc"]
    for task in tasks:
        [job] = [c for c in task["containers"] if c["name"] == "job"]
        assert (task["lastStatus"], job["exitCode"]) == ("STOPPED", 0)
        assert task["stopCode"] == "EssentialContainerExited"

    # The commit's status line, as its awslogs stream has it: the single run's counts.
    [commit] = [t for t in tasks if t["env"]["DSJOB_PHASE"] == "commit"]
    fan = json.loads(last_log_line(emulated, commit))
    assert fan["status"] == "succeeded"
    assert (fan["rows_in"], fan["rows_out"], fan["dropped"]) == (
        one["rows_in"],
        one["rows_out"],
        one["dropped"],
    )
    assert one["rows_in"] == 600 + 30 + 25 + 10
    assert fan["dropped"]["duplicate"] >= 30 + 25 + 10  # the cross-object copies were found

    # The committed output, found as a reader would: current pointer -> manifest -> parts.
    pointer = read_json(emulated, "processed/current/members.json")
    manifest = read_json(emulated, pointer["manifest"])
    assert pointer["manifest"] == "processed/manifests/fan-real.json"
    parts = [o["key"] for o in manifest["outputs"]]
    assert pointer["outputs"] == parts
    assert manifest["counts"]["rows_out"] == one["rows_out"]
    assert sum(o["records"] for o in manifest["outputs"]) == one["rows_out"]
    single_parts = [u.split(f"{emulated.bucket('output')}/", 1)[1] for u in one["outputs"]]

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE one AS SELECT * FROM read_parquet(?)",
        [download(emulated, single_parts, tmp_path / "one")],
    )
    con.execute(
        "CREATE TABLE fan AS SELECT * FROM read_parquet(?)",
        [download(emulated, parts, tmp_path / "fan")],
    )
    assert con.execute("DESCRIBE fan").fetchall() == con.execute("DESCRIBE one").fetchall()
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE fan)").fetchall())
    assert types["age"] == "DOUBLE"
    only_one = "SELECT count(*) FROM (SELECT * FROM one EXCEPT ALL SELECT * FROM fan)"
    only_fan = "SELECT count(*) FROM (SELECT * FROM fan EXCEPT ALL SELECT * FROM one)"
    assert con.execute(only_one).fetchone() == (0,), "rows of the single run missing"
    assert con.execute(only_fan).fetchone() == (0,), "rows the single run does not have"
    assert con.execute("SELECT count(*) FROM fan").fetchone() == (one["rows_out"],)
    listed = emulated.s3.list_objects_v2(
        Bucket=emulated.bucket("output"), Prefix="processed/_work/"
    )
    assert listed["KeyCount"] == 0  # the commit removed the work files


def test_empty_prefix_fails_with_dsjob_empty_input_before_any_task(emulated: Emulated) -> None:
    """No object under the prefix: Dsjob.EmptyInput naming bucket and prefix; no task starts."""
    result = emulated.run("fan-real-empty", {"inputPrefix": "nothing/"}, timeout=30)
    assert (result["status"], result["error"]) == ("FAILED", "Dsjob.EmptyInput")
    assert f"s3://{emulated.bucket('input')}/nothing/" in result["cause"]
    assert started_tasks(emulated, "fan-real-empty") == []


def test_an_object_that_fails_to_map_stops_the_run_before_anything_is_published(
    emulated: Emulated,
) -> None:
    """A malformed object: its map task exits 3, the map run fails, nothing is committed.

    Without the failure threshold (moto does not apply it; the emulator does) the reduce
    and commit would publish the other object's rows as the whole run, and the execution
    would succeed.
    """
    bucket = emulated.bucket("input")
    emulated.s3.put_object(Bucket=bucket, Key="broken/members/a.csv", Body=b"id,name\n1,a\n")
    emulated.s3.put_object(
        Bucket=bucket, Key="broken/members/d.csv", Body=b'id,name\n1,"unterminated\n2,b\n'
    )
    result = emulated.run(
        "fan-broken", {"inputPrefix": "broken/members/", "partitions": 2}, timeout=120
    )
    # On AWS the shard look-up makes the failed map task's Dsjob.Input the error; under
    # moto the look-up fails and the re-raised map error ends States.Runtime (see
    # test_workflow_emulated.py, test_failing_objects_fail_the_map_run_before_any_reduce).
    assert (result["status"], result.get("error")) == ("FAILED", "States.Runtime")
    assert "States.ExceedToleratedFailureThreshold" in result["cause"]
    tasks = {t["env"]["DSJOB_INPUT_KEY"]: t for t in started_tasks(emulated, "fan-broken")}
    assert sorted(tasks) == ["broken/members/a.csv", "broken/members/d.csv"]  # maps only
    for key, code in (("broken/members/a.csv", 0), ("broken/members/d.csv", 3)):
        [job] = [c for c in tasks[key]["containers"] if c["name"] == "job"]
        assert job["exitCode"] == code
    failed = json.loads(last_log_line(emulated, tasks["broken/members/d.csv"]))
    assert "malformed CSV" in failed["error"]
    listed = emulated.s3.list_objects_v2(Bucket=emulated.bucket("output"), Prefix="processed/")
    published = [
        o["Key"]
        for o in listed.get("Contents", [])
        if "fan-broken" in o["Key"]
        and not o["Key"].startswith(("processed/_work/", "processed/status/"))
    ]
    assert published == []  # no part, no manifest


@pytest.mark.parametrize(
    ("execution", "execution_input", "run_id", "missing"),
    [
        ("single-missing", {"inputKey": "raw/none.csv"}, "single-missing", "raw/none.csv"),
        # The tick's run id; no inputKey, so the SSM input-key parameter applies.
        ("tick-1", {"scheduledTime": "2027-03-01T00:00:00Z"}, "monthly-2027-03", "raw/members.csv"),
    ],
)
def test_a_real_job_failure_is_classified_from_the_status_the_job_wrote(
    emulated: Emulated, execution, execution_input, run_id, missing
) -> None:
    """A missing input: the job exits 3; the run fails Dsjob.Input with the job's own status.

    The cause is read from the status object the job wrote (the workflow's statusKey must
    be where the job writes it, for a manual and a scheduled run id): the log-line
    fallback is never entered.
    """
    result = emulated.run(execution, execution_input, timeout=120)
    assert (result["status"], result["error"]) == ("FAILED", "Dsjob.Input")
    pages = emulated.sfn.get_paginator("get_execution_history").paginate(
        executionArn=result["executionArn"]
    )
    entered = [
        e["stateEnteredEventDetails"]["name"]
        for page in pages
        for e in page["events"]
        if "stateEnteredEventDetails" in e
    ]
    assert "Read status object" in entered
    assert "Read status line" not in entered
    cause = json.loads(result["cause"])
    assert (cause["status"], cause["exit_code"], cause["run_id"]) == ("failed", 3, run_id)
    assert missing in cause["error"]
    [task] = started_tasks(emulated, run_id)
    [job] = [c for c in task["containers"] if c["name"] == "job"]
    assert job["exitCode"] == 3
    # The status object is the status line plus the run's dataset (the input's stem).
    assert cause.pop("dataset") == missing.rsplit("/", 1)[-1].removesuffix(".csv")
    assert json.loads(last_log_line(emulated, task)) == cause
