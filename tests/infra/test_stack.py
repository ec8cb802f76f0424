"""The synthesized stack holds every resource issue 5 asks for, with the asked-for properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

pytestmark = pytest.mark.infra

ACCOUNT_REGION = "000000000000-us-east-1"


def _statements(synth, role_prefix: str) -> list[dict[str, Any]]:
    policies = synth.of_type("AWS::IAM::Policy")
    return [
        statement
        for policy in policies.values()
        if any(ref["Ref"].startswith(role_prefix) for ref in policy["Properties"]["Roles"])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def test_stack_is_named_for_purpose_environment_account_and_region(synth):
    """The stack is ds-preprocessing-<env>-<account>-<region>."""
    assert synth.stack.stack_name == f"ds-preprocessing-dev-{ACCOUNT_REGION}"


@pytest.mark.parametrize("purpose", ["input", "output", "artifacts"])
def test_job_buckets_are_encrypted_private_and_tls_only(synth, purpose):
    """Each job bucket: named ds-<purpose>-dev-..., SSE, all public access blocked, TLS enforced."""
    name = f"ds-{purpose}-dev-{ACCOUNT_REGION}"
    synth.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": name,
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": {"LogFilePrefix": f"{name}/"},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                                "Status": "Enabled",
                            }
                        )
                    ]
                )
            },
        },
    )
    [logical_id] = [
        k
        for k, v in synth.of_type("AWS::S3::Bucket").items()
        if v["Properties"].get("BucketName") == name
    ]
    policy = next(
        p["Properties"]["PolicyDocument"]
        for p in synth.of_type("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": logical_id}
    )
    conditions = [s["Condition"] for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert {"Bool": {"aws:SecureTransport": "false"}} in conditions
    assert {"NumericLessThan": {"s3:TlsVersion": 1.2}} in conditions


def test_output_bucket_is_versioned_and_expires_old_versions(synth):
    """The output bucket keeps versions and expires noncurrent ones after 30 days (3 kept)."""
    synth.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": f"ds-output-dev-{ACCOUNT_REGION}",
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "NoncurrentVersionExpiration": {
                                    "NoncurrentDays": 30,
                                    "NewerNoncurrentVersions": 3,
                                },
                                "ExpiredObjectDeleteMarker": True,
                            }
                        )
                    ]
                )
            },
        },
    )


def test_buckets_survive_stack_deletion(synth):
    """Data buckets are retained when the stack is deleted."""
    for bucket in synth.of_type("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"


def test_repository_scans_on_push_has_immutable_tags_and_keeps_last_images(synth):
    """ECR ds-preprocessing: scan on push, immutable tags, lifecycle keeps the last 20 images."""
    repo = synth.one("AWS::ECR::Repository")
    assert repo["RepositoryName"] == "ds-preprocessing"
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repo["ImageTagMutability"] == "IMMUTABLE"
    policy = json.loads(repo["LifecyclePolicy"]["LifecyclePolicyText"])
    [rule] = policy["rules"]
    assert rule["selection"] == {
        "tagStatus": "any",
        "countType": "imageCountMoreThan",
        "countNumber": 20,
    }
    assert rule["action"] == {"type": "expire"}


def test_cluster_has_container_insights(synth):
    """The ECS cluster ds-preprocessing-dev has Container Insights on."""
    cluster = synth.one("AWS::ECS::Cluster")
    assert cluster["ClusterName"] == "ds-preprocessing-dev"
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]


def test_task_definition_is_fargate_2_vcpu_4_gib_with_spill_space(synth):
    """The task: Fargate, awsvpc, 2 vCPU / 4 GiB, 50 GiB ephemeral storage for DuckDB's spill."""
    task = synth.one("AWS::ECS::TaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"
    assert (task["Cpu"], task["Memory"]) == ("2048", "4096")
    assert task["EphemeralStorage"] == {"SizeInGiB": 50}
    assert task["Family"] == "ds-preprocessing-dev"


def test_container_logs_to_its_group_stops_gracefully_and_reads_the_prefix(synth):
    """The job container logs to /ecs/ds-preprocessing-dev (90 days) and gets 120 s to stop."""
    [container] = synth.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    assert container["Name"] == "job"
    assert container["Essential"] is True
    assert container["StopTimeout"] == 120
    assert container["Environment"] == [
        {"Name": "DSJOB_PARAM_PREFIX", "Value": "/ds/preprocessing"}
    ]
    options = container["LogConfiguration"]["Options"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert options["awslogs-stream-prefix"] == "job"
    group_id = options["awslogs-group"]["Ref"]
    group = synth.resources[group_id]["Properties"]
    assert group["LogGroupName"] == "/ecs/ds-preprocessing-dev"
    assert group["RetentionInDays"] == 90
    # The image is this stack's repository at the deployed tag.
    repo_id = next(iter(synth.of_type("AWS::ECR::Repository")))
    image = json.dumps(container["Image"])
    assert repo_id in image
    assert image.endswith(':latest"]]}')


def test_task_role_reads_only_its_prefix_and_buckets_and_writes_only_output(synth):
    """Task role: GetParametersByPath on the prefix, read input+artifacts, write/delete output."""
    statements = _statements(synth, "ComputeTaskRole")
    by_sid = {s["Sid"]: s for s in statements}
    assert set(by_sid) == {
        "ReadJobParameters",
        "ListInputArtifactsOutput",
        "ReadInputAndArtifacts",
        "PublishAndPruneOutputs",
    }
    ssm = by_sid["ReadJobParameters"]
    assert _actions(ssm) == ["ssm:GetParametersByPath"]
    assert json.dumps(ssm["Resource"]).endswith(':parameter/ds/preprocessing"]]}')
    read = by_sid["ReadInputAndArtifacts"]
    assert _actions(read) == ["s3:GetObject"]
    read_refs = json.dumps(read["Resource"])
    assert "BucketsInput" in read_refs
    assert "BucketsArtifacts" in read_refs
    assert "BucketsOutput" not in read_refs
    write = by_sid["PublishAndPruneOutputs"]
    assert sorted(_actions(write)) == [
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:PutObject",
    ]
    assert "BucketsOutput" in json.dumps(write["Resource"])
    assert "BucketsInput" not in json.dumps(write["Resource"])
    every_action = {a for s in statements for a in _actions(s)}
    assert not any(a.endswith("*") for a in every_action)


def test_execution_role_pulls_only_this_repository(synth):
    """Execution role: image pull actions on this repository only, logs on the job's group."""
    statements = _statements(synth, "ComputeExecutionRole")
    pulls = [s for s in statements if "ecr:BatchGetImage" in _actions(s)]
    assert len(pulls) == 1
    assert pulls[0]["Resource"] == {
        "Fn::GetAtt": [next(iter(synth.of_type("AWS::ECR::Repository"))), "Arn"]
    }
    for statement in statements:
        if statement["Resource"] == "*":
            assert _actions(statement) == ["ecr:GetAuthorizationToken"]


def test_ssm_parameters_hold_the_stack_bucket_names(synth):
    """SSM /ds/preprocessing/{input,output,artifact}-bucket name this stack's buckets."""
    params = {
        p["Properties"]["Name"]: p["Properties"]["Value"]
        for p in synth.of_type("AWS::SSM::Parameter").values()
    }
    bucket_ids = {
        v["Properties"]["BucketName"]: k for k, v in synth.of_type("AWS::S3::Bucket").items()
    }
    for key, purpose in [("input", "input"), ("output", "output"), ("artifact", "artifacts")]:
        expected = bucket_ids[f"ds-{purpose}-dev-{ACCOUNT_REGION}"]
        assert params[f"/ds/preprocessing/{key}-bucket"] == {"Ref": expected}
    assert params["/ds/preprocessing/input-key"] == "raw/members.csv"
    assert params["/ds/preprocessing/output-prefix"] == "processed/"


def test_schedule_starts_the_state_machine_at_09_utc_on_the_15th(synth):
    """EventBridge Scheduler runs the state machine monthly: cron(0 9 15 * ? *) in UTC."""
    schedule = synth.one("AWS::Scheduler::Schedule")
    assert schedule["ScheduleExpression"] == "cron(0 9 15 * ? *)"
    assert schedule["State"] == "ENABLED"
    assert schedule["ScheduleExpressionTimezone"] == "Etc/UTC"
    machine_id = next(iter(synth.of_type("AWS::StepFunctions::StateMachine")))
    assert schedule["Target"]["Arn"] == {"Ref": machine_id}
    assert json.loads(schedule["Target"]["Input"]) == {}


def test_state_machine_is_standard_logged_and_traced(synth):
    """The state machine ds-preprocessing-dev is STANDARD, logs ALL and is X-Ray traced."""
    machine = synth.one("AWS::StepFunctions::StateMachine")
    assert machine["StateMachineName"] == "ds-preprocessing-dev"
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["TracingConfiguration"] == {"Enabled": True}


def _definition(synth) -> dict[str, Any]:
    parts = synth.one("AWS::StepFunctions::StateMachine")["DefinitionString"]["Fn::Join"][1]
    definition: dict[str, Any] = json.loads(
        "".join(p if isinstance(p, str) else "TOKEN" for p in parts)
    )
    return definition


def test_run_task_is_ecs_sync_with_run_id_and_overrides(synth):
    """RunTask uses .sync; DSJOB_RUN_ID is the execution name; input fields map to DSJOB_*."""
    definition = _definition(synth)
    block = definition["States"]["Run job"]
    run = block["Branches"][0]["States"]["Run task"]
    assert run["Resource"].endswith(":states:::ecs:runTask.sync")
    assert run["Parameters"]["LaunchType"] == "FARGATE"
    [override] = run["Parameters"]["Overrides"]["ContainerOverrides"]
    env = {e["Name"]: e["Value.$"] for e in override["Environment"]}
    assert env["DSJOB_RUN_ID"] == "$.runId"
    assert env["DSJOB_INPUT_KEY"] == "$.inputKey"
    assert env["DSJOB_OUTPUT_PREFIX"] == "$.job.outputPrefix"
    assert definition["States"]["Single run"]["Parameters"]["runId.$"] == "$$.Execution.Name"


def test_retries_only_transient_and_start_errors_with_jitter(synth):
    """Retry: Dsjob.Transient/TaskFailedToStart on the block, ECS API errors on RunTask; bounded."""
    definition = _definition(synth)
    block = definition["States"]["Run job"]
    [retry] = block["Retry"]
    assert retry["ErrorEquals"] == ["Dsjob.Transient", "Dsjob.TaskFailedToStart"]
    assert retry["JitterStrategy"] == "FULL"
    assert retry["MaxAttempts"] == 3
    assert retry["MaxDelaySeconds"] == 600
    [api_retry] = block["Branches"][0]["States"]["Run task"]["Retry"]
    assert api_retry["ErrorEquals"] == ["ECS.AmazonECSException", "ECS.ServerException"]
    states = block["Branches"][0]["States"]
    fails = {s["Error"]: s for s in states.values() if s["Type"] == "Fail" and "Error" in s}
    assert set(fails) == {
        "Dsjob.Transient",
        "Dsjob.Config",
        "Dsjob.Input",
        "Dsjob.UserCode",
        "Dsjob.Terminated",
        "Dsjob.Failed",
        "Dsjob.TaskFailedToStart",
    }
    classify = states["Classify exit code"]["Choices"]
    assert {c["NumericEquals"]: fails_for(states, c["Next"]) for c in classify} == {
        5: "Dsjob.Transient",
        2: "Dsjob.Config",
        3: "Dsjob.Input",
        4: "Dsjob.UserCode",
        143: "Dsjob.Terminated",
    }
    assert block["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Job failed"}
    ]
    assert definition["States"]["Job failed"] == {
        "Type": "Fail",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }


def fails_for(states: dict[str, Any], name: str) -> str:
    return str(states[name]["Error"])


def test_input_prefix_fans_out_over_a_bounded_distributed_map(synth):
    """An inputPrefix routes to a distributed Map over the input bucket, 10 tasks at a time."""
    definition = _definition(synth)
    choice = definition["States"]["Fan out?"]
    assert choice["Choices"][0]["Next"] == "Run per object"
    fan_out = definition["States"]["Run per object"]
    assert fan_out["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert fan_out["MaxConcurrency"] == 10
    assert fan_out["ItemReader"]["Resource"].endswith(":states:::s3:listObjectsV2")
    assert fan_out["ItemReader"]["Parameters"]["Prefix.$"] == "$.job.inputPrefix"
    assert fan_out["ItemSelector"]["inputKey.$"] == "$$.Map.Item.Value.Key"


def test_context_sizes_the_task_and_moves_the_schedule(tmp_path):
    """Context cpu/memoryMiB/schedule reach the template; an invalid size fails synth early."""
    from aws_cdk.assertions import Template  # noqa: PLC0415

    from dsjob_infra import build_app  # noqa: PLC0415

    context = {
        "environment": "prod",
        "cpu": "4096",
        "memoryMiB": "16384",
        "schedule": "cron(30 6 1 * ? *)",
        "maxConcurrency": "3",
    }
    _, stack = build_app(context, str(tmp_path), nag=False)
    template = Template.from_stack(stack)
    template.has_resource_properties("AWS::ECS::TaskDefinition", {"Cpu": "4096", "Memory": "16384"})
    template.has_resource_properties(
        "AWS::Scheduler::Schedule", {"ScheduleExpression": "cron(30 6 1 * ? *)"}
    )
    assert stack.stack_name.startswith("ds-preprocessing-prod-")
    assert stack.termination_protection is True
    with pytest.raises(ValueError, match="memoryMiB=1024 is not valid with cpu=2048"):
        build_app({"environment": "dev", "memoryMiB": "1024"}, str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="environment must be one of"):
        build_app({"environment": "staging"}, str(tmp_path / "bad2"))
