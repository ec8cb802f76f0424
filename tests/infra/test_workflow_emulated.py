"""The synthesized state machine, executed by moto's Step Functions interpreter against moto's ECS.

What this shows: the definition *as synthesized* (only Ref/GetAtt resolved to the
emulated cluster, subnets, security group, buckets and log group; retry intervals
shortened to 1 s) routes, runs ECS RunTask.sync with the right overrides, reads the
job's status line from CloudWatch Logs, classifies exit codes, retries only exit 5
and tasks that never started, fails with the job's status line as the cause, and
fans out one task per object under a prefix.

What it cannot show: real containers (the emulator scripts each task's exit code
and last log line, see sfn_emulator.py), IAM (moto does not enforce the state
machine role), Fargate capacity errors (ECS.AmazonECSException on RunTask), real
backoff timing, distributed-map child executions as separate executions (moto
runs the iterations inline), and the map's tolerated-failure threshold (moto counts
failed items but lets the map run succeed; AWS fails it at the first failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from tests.support import credentials
from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.infra

EMULATOR = Path(__file__).with_name("sfn_emulator.py")
REGION = "us-east-1"


class Emulated:
    """The moto server with the workflow deployed, and helpers to run and inspect executions."""

    def __init__(self, endpoint: str, outcomes: Path, resources: dict[str, Any]) -> None:
        self.outcomes = outcomes
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        session = boto3.session.Session(
            aws_access_key_id=credentials.ACCESS_KEY_ID,
            aws_secret_access_key=credentials.SECRET_ACCESS_KEY,
            region_name=REGION,
        )
        self.sfn = session.client("stepfunctions", endpoint_url=endpoint)
        self.ecs = session.client("ecs", endpoint_url=endpoint)
        self.ec2 = session.client("ec2", endpoint_url=endpoint)
        self.logs = session.client("logs", endpoint_url=endpoint)
        self.s3 = session.client("s3", endpoint_url=endpoint)
        self.refs: dict[str, Any] = {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.atts: dict[tuple[str, str], Any] = {}
        self._deploy(resources)

    def _deploy(self, resources: dict[str, Any]) -> None:
        """Create in moto what the definition references, from the template's own properties."""
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        [vpc_props] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::VPC"]
        self.ec2.modify_vpc_attribute(
            VpcId=vpc, EnableDnsHostnames={"Value": vpc_props["EnableDnsHostnames"]}
        )
        for logical_id, resource in resources.items():
            kind, props = resource["Type"], resource.get("Properties", {})
            if kind == "AWS::EC2::Subnet":
                self.refs[logical_id] = self.ec2.create_subnet(
                    VpcId=vpc, CidrBlock=f"10.0.{len(self.refs)}.0/24"
                )["Subnet"]["SubnetId"]
            elif kind == "AWS::EC2::SecurityGroup":
                self.atts[logical_id, "GroupId"] = self.ec2.create_security_group(
                    GroupName=logical_id, Description=props["GroupDescription"], VpcId=vpc
                )["GroupId"]
            elif kind == "AWS::ECS::Cluster":
                self.atts[logical_id, "Arn"] = self.ecs.create_cluster(
                    clusterName=props["ClusterName"]
                )["cluster"]["clusterArn"]
            elif kind == "AWS::Logs::LogGroup" and "LogGroupName" in props:
                self.refs[logical_id] = props["LogGroupName"]
                self.logs.create_log_group(logGroupName=props["LogGroupName"])
            elif kind == "AWS::S3::Bucket":
                self.refs[logical_id] = props["BucketName"]
                self.s3.create_bucket(Bucket=props["BucketName"])
            elif kind == "AWS::ECR::Repository":
                self.refs[logical_id] = props["RepositoryName"]
                self.atts[logical_id, "Arn"] = (
                    f"arn:aws:ecr:{REGION}:123456789012:repository/{props['RepositoryName']}"
                )
        [task] = [
            r["Properties"] for r in resources.values() if r["Type"] == "AWS::ECS::TaskDefinition"
        ]
        containers = _camel(self.resolve(task["ContainerDefinitions"]))
        for container in containers:
            # moto sums container-level memory even on Fargate, where task-level is enough.
            container.setdefault("memory", int(task["Memory"]))
        self.ecs.register_task_definition(
            family=task["Family"],
            networkMode=task["NetworkMode"],
            requiresCompatibilities=task["RequiresCompatibilities"],
            cpu=task["Cpu"],
            memory=task["Memory"],
            containerDefinitions=containers,
        )
        [machine] = [
            r["Properties"]
            for r in resources.values()
            if r["Type"] == "AWS::StepFunctions::StateMachine"
        ]
        self.definition = json.loads(self.resolve(machine["DefinitionString"]))
        _shorten_retries(self.definition)
        self.machine_arn = self.sfn.create_state_machine(
            name=machine["StateMachineName"],
            definition=json.dumps(self.definition),
            roleArn="arn:aws:iam::123456789012:role/emulated",
        )["stateMachineArn"]

    def resolve(self, node: Any) -> Any:  # noqa: PLR0911 - one return per intrinsic
        """Resolve the intrinsics CDK used (Ref, GetAtt, Join, Select, Split) to emulated values."""
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return self.refs[node["Ref"]]
        if set(node) == {"Fn::GetAtt"}:
            return self.atts[tuple(node["Fn::GetAtt"])]
        if set(node) == {"Fn::Join"}:
            separator, parts = node["Fn::Join"]
            return separator.join(str(self.resolve(part)) for part in parts)
        if set(node) == {"Fn::Select"}:
            index, items = node["Fn::Select"]
            return self.resolve(items)[index]
        if set(node) == {"Fn::Split"}:
            separator, value = node["Fn::Split"]
            return self.resolve(value).split(separator)
        return {key: self.resolve(value) for key, value in node.items()}

    def script(self, run_id: str, *attempts: dict[str, Any]) -> None:
        """What the container does on each attempt of a run (the last one repeats)."""
        self.scripts[run_id] = list(attempts)
        self.outcomes.write_text(json.dumps(self.scripts))

    def run(self, name: str, execution_input: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start an execution and wait for it to finish (at most 60 s)."""
        arn = self.sfn.start_execution(
            stateMachineArn=self.machine_arn, name=name, input=json.dumps(execution_input or {})
        )["executionArn"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return dict(described)
            time.sleep(0.1)
        pytest.fail(f"execution {name} still running after 60 s")

    def tasks(self, run_id_prefix: str) -> list[dict[str, str]]:
        """The ECS tasks started for a run: their DSJOB_* environment and exit code."""
        arns = self.ecs.list_tasks(cluster="ds-preprocessing-dev")["taskArns"]
        if not arns:
            return []
        found = []
        for task in self.ecs.describe_tasks(cluster="ds-preprocessing-dev", tasks=arns)["tasks"]:
            env = {
                variable["name"]: variable["value"]
                for override in task["overrides"]["containerOverrides"]
                for variable in override["environment"]
            }
            if env["DSJOB_RUN_ID"].startswith(run_id_prefix):
                found.append(env)
        return found


def _camel(node: Any) -> Any:
    if isinstance(node, list):
        return [_camel(item) for item in node]
    if isinstance(node, dict):
        return {
            key[0].lower() + key[1:]: value if key == "Options" else _camel(value)
            for key, value in node.items()
        }
    return node


def _shorten_retries(node: Any) -> None:
    """1 s retry intervals: same attempts, backoff and jitter, without minutes of waiting."""
    if isinstance(node, dict):
        if "IntervalSeconds" in node:
            node["IntervalSeconds"] = 1
            node["MaxDelaySeconds"] = 2
        for value in node.values():
            _shorten_retries(value)
    elif isinstance(node, list):
        for value in node:
            _shorten_retries(value)


@pytest.fixture(scope="module")
def emulated(synth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    """The patched moto server on a free port, with the synthesized workflow created in it."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("sfn")
    outcomes = workdir / "outcomes.json"
    log = (workdir / "emulator.log").open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    proc = subprocess.Popen(
        [sys.executable, str(EMULATOR), str(port), str(outcomes)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"emulator did not start: {(workdir / 'emulator.log').read_text()}")
                time.sleep(0.1)
        yield Emulated(endpoint, outcomes, synth.resources)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def status_line(exit_code: int, **extra: str) -> str:
    """The one-line JSON status the job prints last."""
    status = "succeeded" if exit_code == 0 else "failed"
    return json.dumps({"status": status, "exit_code": exit_code, **extra})


def test_success_runs_one_task_with_run_id_and_overrides(emulated):
    """Exit 0: one task, DSJOB_RUN_ID is the execution name, input fields become DSJOB_*."""
    emulated.script("monthly-ok", {"exit_code": 0, "status_line": status_line(0)})
    result = emulated.run("monthly-ok", {"inputKey": "raw/2026-11.csv", "dataset": "members"})
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"])["runId"] == "monthly-ok"
    [task] = emulated.tasks("monthly-ok")
    assert task["DSJOB_RUN_ID"] == "monthly-ok"
    assert task["DSJOB_INPUT_KEY"] == "raw/2026-11.csv"
    assert task["DSJOB_DATASET"] == "members"
    # Fields the input does not name are passed empty: the SSM parameter applies.
    assert task["DSJOB_OUTPUT_PREFIX"] == ""


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


def test_user_code_failure_is_caught_not_retried(emulated):
    """Exit 4: exactly one task; the execution fails Dsjob.UserCode, cause = the status line."""
    line = status_line(4, error="script.py exited 1: KeyError 'member_id'")
    emulated.script("bad-script", {"exit_code": 4, "status_line": line})
    result = emulated.run("bad-script")
    assert result["status"] == "FAILED"
    assert result["error"] == "Dsjob.UserCode"
    assert result["cause"] == line
    assert len(emulated.tasks("bad-script")) == 1


@pytest.mark.parametrize(
    ("exit_code", "error"),
    [(2, "Dsjob.Config"), (3, "Dsjob.Input"), (143, "Dsjob.Terminated"), (137, "Dsjob.Failed")],
)
def test_other_final_exits_fail_once_with_their_error_name(emulated, exit_code, error):
    """Exits 2, 3, 143 and anything else (137: OOM-killed) fail at once with their own name."""
    run_id = f"final-{exit_code}"
    emulated.script(run_id, {"exit_code": exit_code, "status_line": status_line(exit_code)})
    result = emulated.run(run_id)
    assert (result["status"], result["error"]) == ("FAILED", error)
    assert len(emulated.tasks(run_id)) == 1


def test_success_shaped_output_with_a_bad_exit_is_classified_the_same(emulated):
    """A stopped task handed back as output (moto's shape) with exit 3 still fails Dsjob.Input."""
    line = status_line(3, error="input not found: s3://in/raw/x.csv")
    emulated.script("sync-output", {"exit_code": 3, "status_line": line, "sync_output": True})
    result = emulated.run("sync-output")
    assert (result["status"], result["error"], result["cause"]) == ("FAILED", "Dsjob.Input", line)


def test_missing_status_line_still_names_the_exit_code(emulated):
    """A job killed before printing its status line fails with the exit code in the cause."""
    emulated.script("no-line", {"exit_code": 4})
    result = emulated.run("no-line")
    assert result["error"] == "Dsjob.UserCode"
    assert result["cause"] == "exit code 4; the job logged no status line"


def test_task_that_never_starts_is_retried_then_fails_with_the_reason(emulated):
    """No exit code (image pull failed): retried like exit 5, then fails with the reason."""
    reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"
    emulated.script("no-start", {"exit_code": None, "stopped_reason": reason})
    result = emulated.run("no-start")
    assert result["error"] == "Dsjob.TaskFailedToStart"
    assert reason in result["cause"]
    assert len(emulated.tasks("no-start")) == 4


def test_input_prefix_runs_one_task_per_object(emulated):
    """inputPrefix: one task per object under it (folder markers skipped), each with its key."""
    bucket = next(v for k, v in emulated.refs.items() if k.startswith("BucketsInput"))
    for key in ["batch/", "batch/a.csv", "batch/b.csv", "batch/c.csv", "other/d.csv"]:
        emulated.s3.put_object(Bucket=bucket, Key=key, Body=b"id\n1\n")
    result = emulated.run("fan", {"inputPrefix": "batch/", "dataset": "members"})
    assert result["status"] == "SUCCEEDED", result
    tasks = emulated.tasks("fan-")
    assert sorted(t["DSJOB_INPUT_KEY"] for t in tasks) == [
        "batch/a.csv",
        "batch/b.csv",
        "batch/c.csv",
    ]
    assert {t["DSJOB_DATASET"] for t in tasks} == {"members"}
    assert len({t["DSJOB_RUN_ID"] for t in tasks}) == 3


def test_each_failing_object_fails_its_iteration(emulated):
    """Objects whose task exits 3 are counted as failed items of the map run (tolerance 0).

    moto does not apply the tolerated-failure threshold (its map run succeeds regardless),
    so the parent's FAILED status, which AWS would report, is not asserted here.
    """
    bucket = next(v for k, v in emulated.refs.items() if k.startswith("BucketsInput"))
    for key in ["part/a.csv", "part/b.csv", "part/c.csv"]:
        emulated.s3.put_object(Bucket=bucket, Key=key, Body=b"id\n1\n")
    emulated.script("fanbad-0", {"exit_code": 3, "status_line": status_line(3)})
    emulated.script("fanbad-2", {"exit_code": 3, "status_line": status_line(3)})
    result = emulated.run("fanbad", {"inputPrefix": "part/"})
    [map_run] = emulated.sfn.list_map_runs(executionArn=result["executionArn"])["mapRuns"]
    described = emulated.sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])
    assert described["toleratedFailurePercentage"] == 0
    assert described["itemCounts"]["failed"] == 2
    assert described["itemCounts"]["succeeded"] == 1
    assert len(emulated.tasks("fanbad-")) == 3
