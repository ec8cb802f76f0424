"""The synthesized workflow deployed into the patched moto server (sfn_emulator.py).

`serve` starts the server in either mode (scripted outcomes, or real job
processes) and yields an `Emulated`: the resources the definition references
created from the template's own properties, the state machine created from the
synthesized definition, and helpers to run and inspect executions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from dsjob.status import status_key
from tests.support import credentials
from tests.support.paths import REPO
from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

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
        self.ssm = session.client("ssm", endpoint_url=endpoint)
        self.endpoint = endpoint
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
        # The job's SSM parameters, as the stack writes them (after the buckets they name).
        for resource in resources.values():
            if resource["Type"] == "AWS::SSM::Parameter":
                props = self.resolve(resource["Properties"])
                self.ssm.put_parameter(Name=props["Name"], Value=props["Value"], Type=props["Type"])
        [(task_id, task)] = [
            (k, r["Properties"])
            for k, r in resources.items()
            if r["Type"] == "AWS::ECS::TaskDefinition"
        ]
        containers = _camel(self.resolve(task["ContainerDefinitions"]))
        for container in containers:
            # moto sums container-level memory even on Fargate, where task-level is enough.
            container.setdefault("memory", int(task["Memory"]))
        self.refs[task_id] = self.ecs.register_task_definition(
            family=task["Family"],
            networkMode=task["NetworkMode"],
            requiresCompatibilities=task["RequiresCompatibilities"],
            cpu=task["Cpu"],
            memory=task["Memory"],
            containerDefinitions=containers,
        )["taskDefinition"]["taskDefinitionArn"]
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

    def run(
        self, name: str, execution_input: dict[str, Any] | None = None, *, timeout: float = 60
    ) -> dict[str, Any]:
        """Start an execution and wait for it to finish (at most `timeout` seconds)."""
        arn = self.sfn.start_execution(
            stateMachineArn=self.machine_arn, name=name, input=json.dumps(execution_input or {})
        )["executionArn"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return dict(described)
            time.sleep(0.1)
        pytest.fail(f"execution {name} still running after {timeout} s")

    def bucket(self, purpose: str) -> str:
        """The emulated name of a job bucket (input, output, artifacts)."""
        return str(
            next(v for k, v in self.refs.items() if k.startswith(f"Buckets{purpose.title()}"))
        )

    def write_status(self, run_id: str, status: dict[str, Any], task: str = "") -> str:
        """Put the status object the CLI writes at the end of a run (or task); its JSON text."""
        body = json.dumps(status)
        key = status_key("processed/", run_id, task)
        self.s3.put_object(Bucket=self.bucket("output"), Key=key, Body=body)
        return body

    def tasks(self, run_id_prefix: str) -> list[dict[str, str]]:
        """The ECS tasks started for a run: their DSJOB_* environment."""
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


@contextmanager
def serve(resources: dict[str, Any], workdir: Path, mode: str) -> Iterator[Emulated]:
    """The patched moto server on a free port, with the synthesized workflow created in it.

    ``mode``: ``scripted`` (outcomes.json in `workdir` says what each task does) or
    ``jobs`` (each task runs the job; its files go under `workdir`/tasks).
    """
    port = free_port()
    outcomes = workdir / "outcomes.json"
    target = outcomes if mode == "scripted" else workdir / "tasks"
    log_path = workdir / "emulator.log"
    log = log_path.open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSJOB_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.infra.sfn_emulator", str(port), mode, str(target)],
        cwd=REPO,
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
                    pytest.fail(f"emulator did not start: {log_path.read_text()}")
                time.sleep(0.1)
        yield Emulated(endpoint, outcomes, resources)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
