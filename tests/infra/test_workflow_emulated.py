"""The synthesized state machine, executed by moto's Step Functions interpreter against moto's ECS.

What this shows: the definition *as synthesized* (only Ref/GetAtt resolved to the
emulated cluster, subnets, security group, buckets and log group; retry intervals
shortened to 1 s) routes, runs ECS RunTask.sync with the fan-out task contract's
overrides, picks the job container by name, reads the job's status object from S3
(falling back to its last log line), classifies stop codes, pull errors, OOM kills and
exit codes, retries only what is transient, and runs map -> reduce -> commit over
a prefix.

The task descriptions are shaped as ECS documents them (ECS API Reference,
DescribeTasks: "Task", "Container"; RunTask: "Failure"), and the .sync failure as
Step Functions documents it ("Run Amazon ECS or Fargate tasks with Step Functions":
States.TaskFailed with the task as the JSON cause).

What it cannot show: real containers (the emulator scripts each task here, see
sfn_emulator.py; test_workflow_jobs.py runs the real job), IAM (moto does not
enforce the state machine role), real backoff timing, and two distributed-map
behaviours moto lacks: child executions as separate executions (so the workflow's
look-up of a failed child's error, checked on the template in test_stack.py, fails
here and the map run's own error stays), and ResultWriter's result files (moto
writes only the manifest). The tolerated-failure threshold, which moto does not
apply either, the emulator applies.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from dsjob.dataobjects import not_data
from dsjob.errors import ExitCode
from dsjob.schedule import tick_run_id
from tests.infra.emulated import Emulated, serve

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def emulated(synth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    """The emulator with scripted task outcomes and the synthesized workflow deployed."""
    with serve(synth.resources, tmp_path_factory.mktemp("sfn"), "scripted") as emulated:
        yield emulated


def status_line(exit_code: int, **extra: str) -> str:
    """The one-line JSON status the job prints last."""
    status = "succeeded" if exit_code == 0 else "failed"
    return json.dumps({"status": status, "exit_code": exit_code, **extra})


def test_success_runs_one_task_with_run_id_and_overrides(emulated):
    """Exit 0: one task, phase single, DSJOB_RUN_ID is the execution name, fields become DSJOB_*."""
    emulated.script("monthly-ok", {"exit_code": 0, "status_line": status_line(0)})
    result = emulated.run("monthly-ok", {"inputKey": "raw/2026-11.csv", "dataset": "members"})
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"])["runId"] == "monthly-ok"
    [task] = emulated.tasks("monthly-ok")
    assert task["DSJOB_PHASE"] == "single"
    assert task["DSJOB_RUN_ID"] == "monthly-ok"
    assert task["DSJOB_INPUT_KEY"] == "raw/2026-11.csv"
    assert task["DSJOB_DATASET"] == "members"
    # Fields the input does not name are passed empty: the SSM parameter applies.
    assert task["DSJOB_OUTPUT_PREFIX"] == ""
    assert task["DSJOB_SCHEDULED_TIME"] == ""


@pytest.mark.parametrize(
    ("execution", "tick"),
    [
        ("sched-delivery-1", "2027-01-15T09:00:00Z"),
        ("sched-delivery-2", "2027-12-31T23:59:59Z"),
        ("sched-delivery-3", "2028-02-29T00:00:00Z"),
    ],
)
def test_scheduled_run_gets_the_ticks_run_id_and_time(emulated, execution, tick):
    """The workflow's run id of a tick is the one the job derives from it (schedule.tick_run_id).

    The workflow's id wins when both exist (it is passed as DSJOB_RUN_ID); the job's
    own is its fallback. Two ids for one tick would be two runs, and a second
    delivery would publish again.
    """
    run_id = tick_run_id(tick)
    assert run_id.startswith("monthly-")
    result = emulated.run(execution, {"scheduledTime": tick})
    assert result["status"] == "SUCCEEDED", result
    [task] = emulated.tasks(run_id)
    assert task["DSJOB_RUN_ID"] == run_id
    assert task["DSJOB_SCHEDULED_TIME"] == tick


def test_transient_exit_is_retried_until_it_succeeds(emulated):
    """Exit 5 twice, then 0: three tasks, and the execution succeeds."""
    emulated.script(
        "flaky",
        {"exit_code": 5, "status_line": status_line(5, error="throttled")},
        {"exit_code": 5, "status_line": status_line(5, error="throttled")},
        {"exit_code": 0, "status_line": status_line(0)},
    )
    result = emulated.run("flaky")
    assert result["status"] == "SUCCEEDED", result
    assert len(emulated.tasks("flaky")) == 3


def test_transient_exit_gives_up_after_the_bounded_retries(emulated):
    """Exit 5 every time: 1 + 3 attempts, then Dsjob.Transient with the job's status line."""
    line = status_line(5, error="connection reset by peer")
    emulated.script("always-throttled", {"exit_code": 5, "status_line": line})
    result = emulated.run("always-throttled")
    assert result["status"] == "FAILED"
    assert result["error"] == "Dsjob.Transient"
    assert result["cause"] == line
    assert len(emulated.tasks("always-throttled")) == 4


def test_failure_cause_is_the_status_object_not_the_last_log_line(emulated):
    """Exit 4 with a status object in S3: the cause is that object, not a later progress line."""
    body = emulated.write_status(
        "bad-script", {"status": "failed", "exit_code": 4, "error": "KeyError 'member_id'"}
    )
    progress = json.dumps({"level": "info", "message": "rows read", "rows": 1000})
    emulated.script("bad-script", {"exit_code": 4, "status_line": progress})
    result = emulated.run("bad-script")
    assert (result["status"], result["error"]) == ("FAILED", "Dsjob.UserCode")
    assert result["cause"] == body
    assert len(emulated.tasks("bad-script")) == 1


@pytest.mark.parametrize("code", [c for c in ExitCode if c != ExitCode.OK])
def test_every_exit_code_fails_with_its_own_error_name(emulated, code):
    """Each dsjob.errors.ExitCode fails as Dsjob.<Name>; only TRANSIENT is retried."""
    run_id = f"exit-{int(code)}"
    emulated.script(run_id, {"exit_code": int(code), "status_line": status_line(int(code))})
    result = emulated.run(run_id)
    expected = "Dsjob." + "".join(part.capitalize() for part in code.name.split("_"))
    assert (result["status"], result["error"]) == ("FAILED", expected)
    assert len(emulated.tasks(run_id)) == (4 if code is ExitCode.TRANSIENT else 1)
    if code is ExitCode.OUT_OF_MEMORY:
        assert "raise the task memory" in result["cause"]


def test_unknown_exit_code_fails_as_dsjob_failed(emulated):
    """An exit code dsjob never uses (e.g. 99 from a crashed runtime) fails Dsjob.Failed once."""
    emulated.script("exit-99", {"exit_code": 99, "status_line": status_line(99)})
    result = emulated.run("exit-99")
    assert (result["error"], len(emulated.tasks("exit-99"))) == ("Dsjob.Failed", 1)


def test_success_shaped_output_with_a_bad_exit_is_classified_the_same(emulated):
    """A stopped task handed back as output (moto's shape) with exit 3 still fails Dsjob.Input."""
    line = status_line(3, error="input not found: s3://in/raw/x.csv")
    emulated.script("sync-output", {"exit_code": 3, "status_line": line, "sync_output": True})
    result = emulated.run("sync-output")
    assert (result["status"], result["error"], result["cause"]) == ("FAILED", "Dsjob.Input", line)


def test_missing_status_still_names_the_exit_code(emulated):
    """A job killed before writing any status fails with the exit code in the cause."""
    emulated.script("no-line", {"exit_code": 4})
    result = emulated.run("no-line")
    assert result["error"] == "Dsjob.UserCode"
    assert result["cause"] == "exit code 4; the job wrote no status"


def test_job_container_is_found_by_name_behind_a_guardduty_sidecar(emulated):
    """Sidecar listed first (no exit code), job exits 3: Dsjob.Input, not 'never started'."""
    line = status_line(3, error="input not found")
    emulated.script("sidecar", {"exit_code": 3, "status_line": line, "sidecar_first": True})
    result = emulated.run("sidecar")
    assert (result["error"], result["cause"]) == ("Dsjob.Input", line)
    emulated.script("sidecar-ok", {"exit_code": 0, "sidecar_first": True})
    assert emulated.run("sidecar-ok")["status"] == "SUCCEEDED"


def test_spot_interruption_is_transient_even_with_exit_143(emulated):
    """StopCode SpotInterruption with the job's SIGTERM exit 143 is retried, then succeeds."""
    emulated.script(
        "spot",
        {
            "exit_code": 143,
            "stop_code": "SpotInterruption",
            "stopped_reason": "Your Spot Task was interrupted.",
            "status_line": status_line(143, error="terminated"),
        },
        {"exit_code": 0},
    )
    result = emulated.run("spot")
    assert result["status"] == "SUCCEEDED", result
    assert len(emulated.tasks("spot")) == 2


def test_oom_kill_fails_once_saying_to_raise_memory(emulated):
    """Exit 137 with Reason OutOfMemoryError: Dsjob.OutOfMemory, not retried, cause names memory."""
    emulated.script(
        "oom",
        {
            "exit_code": 137,
            "container_reason": "OutOfMemoryError: Container killed due to memory usage",
            "status_line": json.dumps({"level": "info", "message": "rows read"}),
        },
    )
    result = emulated.run("oom")
    assert (result["status"], result["error"]) == ("FAILED", "Dsjob.OutOfMemory")
    assert "raise the task memory" in result["cause"]
    assert "now 4096 MiB" in result["cause"]
    assert len(emulated.tasks("oom")) == 1


def test_image_pull_error_is_final(emulated):
    """CannotPullContainerError (tag not found): one task, Dsjob.ImagePullFailed with the reason."""
    reason = (
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to "
        "resolve ref 123456789012.dkr.ecr.us-east-1.amazonaws.com/ds-preprocessing:0.1.0-abc: "
        "not found"
    )
    emulated.script("no-image", {"exit_code": None, "stopped_reason": reason})
    result = emulated.run("no-image")
    assert result["error"] == "Dsjob.ImagePullFailed"
    assert reason in result["cause"]
    assert len(emulated.tasks("no-image")) == 1


def test_task_that_never_starts_for_another_reason_is_retried(emulated):
    """No exit code and a network-setup reason: retried like exit 5, then fails with the reason."""
    reason = "ResourceInitializationError: failed to configure ENI: timeout"
    emulated.script("no-start", {"exit_code": None, "stopped_reason": reason})
    result = emulated.run("no-start")
    assert result["error"] == "Dsjob.TaskFailedToStart"
    assert reason in result["cause"]
    assert len(emulated.tasks("no-start")) == 4


def test_runtask_failures_list_is_retried_as_capacity(emulated):
    """RunTask answering Failures (RESOURCE:MEMORY) is retried; the next attempt runs the job."""
    failures = [
        {
            "arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x",
            "reason": "RESOURCE:MEMORY",
        }
    ]
    emulated.script("no-capacity", {"failures": failures}, {"exit_code": 0})
    result = emulated.run("no-capacity")
    assert result["status"] == "SUCCEEDED", result
    assert len(emulated.tasks("no-capacity")) == 1
    # When every attempt is refused, moto ends the branch with States.Runtime instead of
    # taking the Catch to Dsjob.TaskNotPlaced; that Catch is checked on the template.


def _put(emulated, keys: dict[str, bytes]) -> None:
    for key, body in keys.items():
        emulated.s3.put_object(Bucket=emulated.bucket("input"), Key=key, Body=body)


def test_input_prefix_maps_data_files_then_reduces_partitions_then_commits(emulated):
    """inputPrefix: a map per data object, a reduce per partition 0..P-1, one commit; one run id."""
    _put(
        emulated,
        {
            "batch/": b"",
            "batch/a.csv": b"id\n1\n",
            "batch/b.csv": b"id\n2\n",
            "batch/c.csv": b"id\n1\n",
            "batch/empty.csv": b"",
            "other/d.csv": b"id\n9\n",
        },
    )
    result = emulated.run("fan", {"inputPrefix": "batch/", "dataset": "members", "partitions": 3})
    assert result["status"] == "SUCCEEDED", result
    tasks = emulated.tasks("fan")
    by_phase: dict[str, list[dict[str, str]]] = {}
    for task in tasks:
        by_phase.setdefault(task["DSJOB_PHASE"], []).append(task)
    assert sorted(t["DSJOB_INPUT_KEY"] for t in by_phase["map"]) == [
        "batch/a.csv",
        "batch/b.csv",
        "batch/c.csv",
    ]
    assert sorted(t["DSJOB_PARTITION"] for t in by_phase["reduce"]) == ["0", "1", "2"]
    [commit] = by_phase["commit"]
    assert "DSJOB_PARTITION" not in commit
    assert "DSJOB_INPUT_KEY" not in commit
    assert {t["DSJOB_RUN_ID"] for t in tasks} == {"fan"}
    assert {t["DSJOB_PARTITIONS"] for t in tasks} == {"3"}
    assert {t["DSJOB_DATASET"] for t in tasks} == {"members"}
    # The map's results went to S3 (ResultWriter), not into the payload. moto writes only
    # the manifest (no SUCCEEDED_n.json result files, which AWS adds).
    listed = emulated.s3.list_objects_v2(Bucket=emulated.bucket("output"), Prefix="_map-results/")
    assert any(o["Key"].endswith("manifest.json") for o in listed.get("Contents", []))


def test_empty_input_prefix_fails_with_a_clear_cause(emulated):
    """A prefix with no objects fails Dsjob.EmptyInput naming the bucket and prefix; no task."""
    result = emulated.run("fan-empty", {"inputPrefix": "nothing-here/"})
    assert result["error"] == "Dsjob.EmptyInput"
    assert f"s3://{emulated.bucket('input')}/nothing-here/" in result["cause"]
    assert emulated.tasks("fan-empty") == []


def test_a_hollow_input_prefix_fails_as_empty_input_before_any_task(emulated):
    """A folder marker and a 0-byte object only: Dsjob.EmptyInput naming the prefix; no task.

    Without the data-object check the map would skip both items, and the reduce tasks
    would fail Dsjob.Input for want of any map result.
    """
    _put(emulated, {"hollow/": b"", "hollow/2027-01.csv": b""})
    result = emulated.run("fan-hollow", {"inputPrefix": "hollow/"})
    assert (result["status"], result["error"]) == ("FAILED", "Dsjob.EmptyInput")
    assert f"no data objects under s3://{emulated.bucket('input')}/hollow/" in result["cause"]
    assert emulated.tasks("fan-hollow") == []


# Keys a Spark or Hadoop writer leaves, and edge cases of the hidden-name rule.
SPARK_OUTPUT = {
    "spark/": b"",
    "spark/_SUCCESS": b"written by spark\n",
    "spark/_metadata": b"meta",
    "spark/.part-0.csv.crc": b"crc",
    "spark/part-0.csv": b"id\n1\n",
    "spark/_tmp/part-1.csv": b"id\n2\n",
    "spark/x_SUCCESS.csv": b"id\n3\n",
    "spark/empty.csv": b"",
}


def test_the_map_maps_exactly_the_objects_the_local_fan_out_does(emulated):
    """One key list, two filters: the workflow maps the keys dsjob.dataobjects calls data.

    dsjob.dataobjects.not_data is what `dsjob local fanout` filters with; the workflow's
    "Data file?" Choice is ASL built from the same constants, so this holds them equal.
    """
    _put(emulated, SPARK_OUTPUT)
    local = sorted(k for k, body in SPARK_OUTPUT.items() if not not_data(k, len(body)))
    assert local == ["spark/_tmp/part-1.csv", "spark/part-0.csv", "spark/x_SUCCESS.csv"]
    result = emulated.run("fan-spark", {"inputPrefix": "spark/", "partitions": 1})
    assert result["status"] == "SUCCEEDED", result
    mapped = [t["DSJOB_INPUT_KEY"] for t in emulated.tasks("fan-spark") if "DSJOB_INPUT_KEY" in t]
    assert sorted(mapped) == local


def test_a_prefix_of_only_a_success_marker_is_empty_input(emulated):
    """A folder marker and a _SUCCESS with bytes in it: Dsjob.EmptyInput, as locally; no task."""
    done = {"done/": b"", "done/_SUCCESS": b"written by spark\n", "done/.crc": b"crc"}
    _put(emulated, done)
    assert not [k for k, body in done.items() if not not_data(k, len(body))]
    result = emulated.run("fan-done", {"inputPrefix": "done/"})
    assert (result["status"], result["error"]) == ("FAILED", "Dsjob.EmptyInput")
    assert f"no data objects under s3://{emulated.bucket('input')}/done/" in result["cause"]
    assert emulated.tasks("fan-done") == []


def test_a_failing_reduce_shard_fails_the_run_with_its_own_error(emulated):
    """Partition 1 exits 3: the execution fails Dsjob.Input with that shard's status; no commit."""
    _put(emulated, {"red/a.csv": b"id\n1\n"})
    failed = {"status": "failed", "exit_code": 3, "error": "bad"}
    emulated.write_status("fan-red", {"status": "failed", "exit_code": 3, "error": "a map's"})
    body = emulated.write_status("fan-red", failed, "reduce-1")  # the shard's own object
    emulated.script("fan-red/reduce/1", {"exit_code": 3})
    result = emulated.run("fan-red", {"inputPrefix": "red/", "partitions": 2})
    assert (result["status"], result["error"], result["cause"]) == ("FAILED", "Dsjob.Input", body)
    assert "commit" not in {t["DSJOB_PHASE"] for t in emulated.tasks("fan-red")}


def test_failing_objects_fail_the_map_run_before_any_reduce(emulated):
    """Two of three map tasks exit 3: the map run fails (tolerance 0); no reduce, no commit.

    The threshold is the emulator's (moto counts failed items but lets the map succeed).
    On AWS the workflow then looks up the failed child's error (checked on the template,
    test_stack.py) and fails with it, Dsjob.Input. moto has no ListExecutions by map run,
    so the look-up fails and "Job failed" re-raises the map run's own error, which moto's
    Fail state refuses (it rejects an ErrorPath value starting with "States."): the run
    ends States.Runtime with that error named in the cause.
    """
    _put(emulated, {"part/a.csv": b"id\n1\n", "part/b.csv": b"id\n2\n", "part/c.csv": b"id\n3\n"})
    emulated.script("fanbad/map/part/a.csv", {"exit_code": 3})
    emulated.script("fanbad/map/part/c.csv", {"exit_code": 3})
    result = emulated.run("fanbad", {"inputPrefix": "part/", "partitions": 1})
    assert (result["status"], result.get("error")) == ("FAILED", "States.Runtime")
    assert "States.ExceedToleratedFailureThreshold" in result["cause"]
    assert {t["DSJOB_PHASE"] for t in emulated.tasks("fanbad")} == {"map"}
    [map_run] = emulated.sfn.list_map_runs(executionArn=result["executionArn"])["mapRuns"]
    described = emulated.sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])
    assert described["status"] == "FAILED"
    assert described["toleratedFailurePercentage"] == 0
    assert described["itemCounts"]["failed"] == 2
    assert described["itemCounts"]["succeeded"] == 1
