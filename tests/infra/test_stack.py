"""The synthesized stacks: each resource the pipeline needs, with the properties it relies on."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
    from aws_cdk.assertions import Match  # noqa: PLC0415 - the dev image has no CDK; collecting must not need it

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
    """The output bucket keeps versions; noncurrent ones and lone delete markers expire (30 d)."""
    from aws_cdk.assertions import Match  # noqa: PLC0415 - the dev image has no CDK; collecting must not need it

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
                                # No NewerNoncurrentVersions: a pruned output (one version
                                # under a delete marker) must expire too.
                                "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
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


def test_repository_stack_expires_only_untagged_and_superseded_images(synth):
    """ECR (own stack): scan on push, immutable tags; expire untagged, keep the newest 20 tagged."""
    [repo] = [r["Properties"] for r in synth.repository["Resources"].values()]
    assert repo["RepositoryName"] == "ds-preprocessing"
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repo["ImageTagMutability"] == "IMMUTABLE"
    rules = json.loads(repo["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    selections = {rule["rulePriority"]: rule["selection"] for rule in rules}
    assert selections[1]["tagStatus"] == "untagged"
    assert selections[2] == {
        "tagStatus": "tagged",
        "tagPatternList": ["*"],
        "countType": "imageCountMoreThan",
        "countNumber": 20,
    }
    assert not any(rule["selection"]["tagStatus"] == "any" for rule in rules)
    outputs = synth.repository["Outputs"]
    assert outputs["ImagePlatform"]["Value"] == "linux/amd64"
    assert "RepositoryName" in outputs
    assert synth.stack.repository_stack.stack_name == (
        f"ds-preprocessing-dev-repository-{ACCOUNT_REGION}"
    )


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
    # Without imageDigest (synth with no account) the image is the repository at the tag.
    image = json.dumps(container["Image"])
    assert "/ds-preprocessing:latest" in image


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


def test_execution_role_pulls_this_repository_and_the_guardduty_agent(synth):
    """Execution role: pulls from this repository and GuardDuty's agent repository only."""
    statements = _statements(synth, "ComputeExecutionRole")
    pulls = [s for s in statements if "ecr:BatchGetImage" in _actions(s)]
    resources = sorted(json.dumps(s["Resource"]) for s in pulls)
    assert len(resources) == 2
    assert any(r.endswith(':repository/ds-preprocessing"]]}') for r in resources)
    guardduty = next(s for s in pulls if s.get("Sid") == "PullGuardDutyAgent")
    assert json.dumps(guardduty["Resource"]).endswith(
        ':ecr:us-east-1:*:repository/aws-guardduty-agent-fargate"]]}'
    )
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
    """Monthly at 09:00 UTC on the 15th, passing the tick's time, with a dead-letter queue."""
    schedule = synth.one("AWS::Scheduler::Schedule")
    assert schedule["ScheduleExpression"] == "cron(0 9 15 * ? *)"
    assert schedule["State"] == "ENABLED"
    assert schedule["ScheduleExpressionTimezone"] == "Etc/UTC"
    machine_id = next(iter(synth.of_type("AWS::StepFunctions::StateMachine")))
    assert schedule["Target"]["Arn"] == {"Ref": machine_id}
    assert json.loads(schedule["Target"]["Input"]) == {
        "scheduledTime": "<aws.scheduler.scheduled-time>"
    }
    [queue_id] = synth.of_type("AWS::SQS::Queue")
    assert schedule["Target"]["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    assert schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 10
    # The dead-letter queue's first message alarms the failure topic.
    [alarm] = synth.of_type("AWS::CloudWatch::Alarm").values()
    [topic_id] = synth.of_type("AWS::SNS::Topic")
    assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]


def test_state_machine_is_standard_logged_and_traced(synth):
    """The state machine ds-preprocessing-dev is STANDARD, logs ALL, is traced, times out."""
    machine = synth.one("AWS::StepFunctions::StateMachine")
    assert _definition(synth)["TimeoutSeconds"] == 12 * 3600
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


def _block(definition: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The states of one job block (Run job / Map Run job / Reduce Run job / Commit Run job)."""
    states = definition["States"]
    if prefix == "Map ":
        states = states["Map objects"]["ItemProcessor"]["States"]
    elif prefix == "Reduce ":
        states = states["Reduce partitions"]["ItemProcessor"]["States"]
    block: dict[str, Any] = states[f"{prefix}Run job"]
    return block


def _environment(block: dict[str, Any], prefix: str = "") -> dict[str, str]:
    run = block["Branches"][0]["States"][f"{prefix}Run task"]
    [override] = run["Parameters"]["Overrides"]["ContainerOverrides"]
    assert override["Name"] == "job"
    return {e["Name"]: e.get("Value.$", e.get("Value")) for e in override["Environment"]}


def test_run_task_is_ecs_sync_with_run_id_and_overrides(synth):
    """RunTask.sync on Fargate, tagged, timed out; DSJOB_RUN_ID/PHASE and input fields passed."""
    definition = _definition(synth)
    run = _block(definition)["Branches"][0]["States"]["Run task"]
    assert run["Resource"].endswith(":states:::ecs:runTask.sync")
    assert run["Parameters"]["LaunchType"] == "FARGATE"
    assert run["Parameters"]["PropagateTags"] == "TASK_DEFINITION"
    assert run["TimeoutSeconds"] == 240 * 60
    env = _environment(_block(definition))
    assert env["DSJOB_PHASE"] == "single"
    assert env["DSJOB_RUN_ID"] == "$.run.id"
    assert env["DSJOB_INPUT_KEY"] == "$.job.inputKey"
    assert env["DSJOB_SCHEDULED_TIME"] == "$.job.scheduledTime"
    assert env["DSJOB_OUTPUT_PREFIX"] == "$.job.outputPrefix"
    assert definition["States"]["Manual run id"]["Parameters"]["id.$"] == "$$.Execution.Name"
    scheduled = definition["States"]["Scheduled run id"]["Parameters"]["id.$"]
    assert scheduled.startswith("States.Format('monthly-{}-{}', States.ArrayGetItem(")


def test_job_container_is_picked_by_name_not_position(synth):
    """The classifier reads the container named job (a GuardDuty sidecar may come first)."""
    states = _block(_definition(synth))["Branches"][0]["States"]
    pick = states["Pick job container"]["Parameters"]["containers.$"]
    assert pick == "$.ecs.task.Containers[?(@.Name == 'job')]"
    assert "Containers[0]" not in json.dumps(states)


def test_retries_only_transient_failures_with_jitter(synth):
    """Retry: Transient/TaskFailedToStart on the block; ECS API errors and Failures on RunTask."""
    block = _block(_definition(synth))
    [retry] = block["Retry"]
    assert retry["ErrorEquals"] == ["Dsjob.Transient", "Dsjob.TaskFailedToStart"]
    assert retry["JitterStrategy"] == "FULL"
    assert retry["MaxAttempts"] == 3
    assert retry["MaxDelaySeconds"] == 600
    states = block["Branches"][0]["States"]
    [api_retry] = states["Run task"]["Retry"]
    assert api_retry["ErrorEquals"] == [
        "ECS.AmazonECSException",
        "ECS.ServerException",
        "AmazonECS.Unknown",
    ]
    catches = {tuple(c["ErrorEquals"]): c["Next"] for c in states["Run task"]["Catch"]}
    assert catches[("States.TaskFailed",)] == "Parse failed task"
    assert states[catches[tuple(api_retry["ErrorEquals"])]]["Error"] == "Dsjob.TaskNotPlaced"
    assert block["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Job failed"}
    ]
    assert definition_fail(synth) == {
        "Type": "Fail",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }


def definition_fail(synth) -> dict[str, Any]:
    return dict(_definition(synth)["States"]["Job failed"])


def test_every_exit_code_has_its_own_error(synth):
    """Each dsjob.errors.ExitCode but OK has a Classify branch failing Dsjob.<Name>."""
    from dsjob.errors import ExitCode  # noqa: PLC0415

    states = _block(_definition(synth))["Branches"][0]["States"]
    classify = states["Classify exit code"]["Choices"]
    mapped = {c["NumericEquals"]: states[c["Next"]]["Error"] for c in classify}
    assert set(mapped) == {int(c) for c in ExitCode if c is not ExitCode.OK}
    assert mapped[5] == "Dsjob.Transient"
    assert mapped[6] == "Dsjob.OutOfMemory"
    assert mapped[4] == "Dsjob.UserCode"
    assert states[states["Classify exit code"]["Default"]]["Error"] == "Dsjob.Failed"


def test_stop_codes_pull_errors_and_oom_are_classified_before_exit_codes(synth):
    """Spot/TerminationNotice -> Transient; CannotPullContainerError final; 137/OOM -> memory."""
    states = _block(_definition(synth))["Branches"][0]["States"]
    choices = states["Classify stop"]["Choices"]
    stop = json.dumps(choices[0])
    assert "SpotInterruption" in stop
    assert "TerminationNotice" in stop
    assert states[choices[0]["Next"]]["Error"] == "Dsjob.Transient"
    oom = json.dumps(choices[2])
    assert '"NumericEquals": 137' in oom
    assert "OutOfMemoryError*" in oom
    assert states[choices[2]["Next"]]["Error"] == "Dsjob.OutOfMemory"
    why = states["Why not started?"]["Choices"]
    assert "*CannotPullContainerError*" in json.dumps(why[0])
    assert states[why[0]["Next"]]["Error"] == "Dsjob.ImagePullFailed"


def test_failure_cause_comes_from_the_status_object_with_the_log_as_fallback(synth):
    """Non-zero exit: GetObject <prefix>status/<run>.json; if that fails, the last log line."""
    definition = _definition(synth)
    states = _block(definition)["Branches"][0]["States"]
    read = states["Read status object"]
    assert read["Resource"].endswith(":states:::aws-sdk:s3:getObject")
    assert read["Parameters"]["Key.$"] == "$.run.statusKey"
    assert read["Catch"][0]["Next"] == "Read status line"
    key = definition["States"]["Status key (parameter prefix)"]["Parameters"]["statusKey.$"]
    assert key == "States.Format('processed/status/{}.json', $.run.id)"


def test_input_prefix_fans_out_map_reduce_commit(synth):
    """inputPrefix: list (empty fails), distributed map of data files, reduce 0..P-1, commit."""
    from aws_cdk.assertions import Match  # noqa: PLC0415 - the dev image has no CDK; collecting must not need it

    from dsjob_infra.workflow import HOLLOW_CHECK_KEYS  # noqa: PLC0415 - imports CDK

    definition = _definition(synth)
    states = definition["States"]
    assert states["Fan out?"]["Choices"][0]["Next"] == "List input prefix"
    assert states["Any input objects?"]["Choices"][0]["Next"] == "Empty input prefix"
    assert states["Empty input prefix"]["Error"] == "Dsjob.EmptyInput"
    # Objects, but no data (folder markers, empty objects, hidden names): the same failure;
    # one page's objects with bytes go through the map's rule (emulated: _SUCCESS only).
    assert states["Any input objects?"]["Default"] == "List data objects"
    data = states["List data objects"]
    assert data["ResultSelector"]["objects.$"] == "$.Contents[?(@.Size > 0)]"
    assert data["Parameters"]["MaxKeys"] == HOLLOW_CHECK_KEYS
    assert "Listed Data file?" in states["Classify listed objects"]["ItemProcessor"]["States"]
    assert states["Any data objects?"]["Default"] == "Hollow input prefix"
    assert states["Hollow input prefix"]["Error"] == "Dsjob.EmptyInput"
    fan_out = states["Map objects"]
    assert fan_out["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert fan_out["MaxConcurrency"] == 10
    # Absent means 0 (Step Functions, "ToleratedFailurePercentage"): the first failure fails it.
    assert fan_out.get("ToleratedFailurePercentage", 0) == 0
    assert fan_out["ItemReader"]["Resource"].endswith(":states:::s3:listObjectsV2")
    assert fan_out["ItemReader"]["Parameters"]["Prefix.$"] == "$.job.inputPrefix"
    assert fan_out["ItemSelector"]["key.$"] == "$$.Map.Item.Value.Key"
    assert fan_out["ResultWriter"]["Resource"].endswith(":states:::s3:putObject")
    assert fan_out["ResultWriter"]["Parameters"]["Prefix"] == "_map-results"
    synth.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": f"ds-output-dev-{ACCOUNT_REGION}",
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"Prefix": "_map-results/", "ExpirationInDays": 30})]
                )
            },
        },
    )
    data_file = json.dumps(fan_out["ItemProcessor"]["States"]["Data file?"])
    assert '"NumericEquals": 0' in data_file
    assert '"StringMatches": "*/"' in data_file
    assert '"StringMatches": "_*"' in data_file
    assert fan_out["Next"] == "Partition numbers"
    reduce = states["Reduce partitions"]
    assert reduce["ItemsPath"] == "$.partitions.numbers"
    assert "States.ArrayRange(0" in states["Partition numbers"]["Parameters"]["numbers.$"]
    assert reduce["Next"] == "Commit Run job"
    map_env = _environment(_block(definition, "Map "), "Map ")
    assert (map_env["DSJOB_PHASE"], map_env["DSJOB_INPUT_KEY"]) == ("map", "$.key")
    reduce_env = _environment(_block(definition, "Reduce "), "Reduce ")
    assert (reduce_env["DSJOB_PHASE"], reduce_env["DSJOB_PARTITION"]) == ("reduce", "$.partition")
    commit_env = _environment(states["Commit Run job"], "Commit ")
    assert commit_env["DSJOB_PHASE"] == "commit"
    assert "DSJOB_PARTITION" not in commit_env
    assert "DSJOB_INPUT_KEY" not in commit_env
    for env in (map_env, reduce_env, commit_env):
        assert env["DSJOB_RUN_ID"] == "$.run.id"
        assert env["DSJOB_PARTITIONS"] == "$.run.partitions"


def test_a_failed_map_shard_becomes_the_executions_cause(synth):
    """Map fails -> ListMapRuns -> ListExecutions(FAILED) -> DescribeExecution -> Job failed."""
    states = _definition(synth)["States"]
    [catch] = states["Map objects"]["Catch"]
    assert catch["Next"] == "Find map run"
    chain = ["Find map run", "Find failed shard", "Describe failed shard"]
    actions = [states[name]["Resource"].rsplit(":", 1)[-1] for name in chain]
    assert actions == ["listMapRuns", "listExecutions", "describeExecution"]
    assert states["Find failed shard"]["Parameters"]["StatusFilter"] == "FAILED"
    assert states["Describe failed shard"]["ResultPath"] == "$.error"
    assert states["Describe failed shard"]["Next"] == "Job failed"
    for name in chain:  # a failed look-up keeps the map's own error
        assert states[name]["Catch"][0]["Next"] == "Job failed"


def _machine_statements(synth) -> list[dict[str, Any]]:
    return _statements(synth, "WorkflowStateMachineRole")


def test_state_machine_role_scopes_ecs_and_passrole(synth):
    """RunTask on the family, Stop/DescribeTasks/TagResource on the cluster's tasks, PassRole."""
    by_sid = {s.get("Sid"): s for s in _machine_statements(synth)}
    run = by_sid["RunJobTask"]
    assert json.dumps(run["Resource"]).endswith(':task-definition/ds-preprocessing-dev:*"]]}')
    assert "ecs:cluster" in run["Condition"]["ArnEquals"]
    watch = by_sid["WatchAndStopJobTasks"]
    assert sorted(_actions(watch)) == ["ecs:DescribeTasks", "ecs:StopTask"]
    assert json.dumps(watch["Resource"]).endswith(':task/ds-preprocessing-dev/*"]]}')
    tag = by_sid["TagJobTasksAtLaunch"]
    assert _actions(tag) == ["ecs:TagResource"]
    assert tag["Condition"] == {"StringEquals": {"ecs:CreateAction": "RunTask"}}
    passrole = by_sid["PassJobRoles"]
    assert passrole["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    for statement in _machine_statements(synth):
        if statement["Resource"] == "*":
            assert not any(a.startswith(("ecs:", "iam:")) for a in _actions(statement))


def test_task_security_group_allows_only_https_out(synth):
    """The task's security group: no ingress, egress TCP 443 only."""
    [group] = synth.of_type("AWS::EC2::SecurityGroup").values()
    props = group["Properties"]
    assert "SecurityGroupIngress" not in props
    assert props["SecurityGroupEgress"] == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "HTTPS to AWS service endpoints",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]


def test_s3_endpoint_reaches_only_this_stacks_buckets_and_ecr_layers(synth):
    """The S3 gateway endpoint's policy names the three buckets and the ECR layer bucket."""
    [endpoint] = synth.of_type("AWS::EC2::VPCEndpoint").values()
    statements = endpoint["Properties"]["PolicyDocument"]["Statement"]
    resources = json.dumps([s["Resource"] for s in statements])
    for purpose in ("Input", "Output", "Artifacts"):
        assert f"Buckets{purpose}" in resources
    assert "prod-us-east-1-starport-layer-bucket/*" in resources
    assert "AccessLogs" not in resources


def test_failed_or_timed_out_executions_reach_the_topic(synth):
    """An EventBridge rule on FAILED/TIMED_OUT of this machine publishes to the encrypted topic."""
    [rule] = synth.of_type("AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail"]["status"] == ["FAILED", "TIMED_OUT"]
    machine_id = next(iter(synth.of_type("AWS::StepFunctions::StateMachine")))
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": machine_id}]
    [topic_id] = synth.of_type("AWS::SNS::Topic")
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Ref": topic_id}
    topic = synth.resources[topic_id]["Properties"]
    assert "KmsMasterKeyId" in topic
    # No alarmEmail in dev by default: no subscription to confirm.
    assert synth.of_type("AWS::SNS::Subscription") == {}


def test_context_sizes_the_task_and_moves_the_schedule(tmp_path):
    """Context cpu/memoryMiB/schedule reach the template; an invalid size fails synth early."""
    from aws_cdk.assertions import Template  # noqa: PLC0415

    from dsjob_infra import build_app  # noqa: PLC0415

    digest = "sha256:" + "ab" * 32
    context = {
        "environment": "prod",
        "cpu": "4096",
        "memoryMiB": "16384",
        "schedule": "cron(30 6 1 * ? *)",
        "maxConcurrency": "3",
        "imageDigest": digest,
        "cpuArchitecture": "ARM64",
        "alarmEmail": "data-team@example.com",
    }
    _, stack = build_app(context, str(tmp_path), nag=False)
    template = Template.from_stack(stack)
    [task] = template.find_resources("AWS::ECS::TaskDefinition").values()
    props = task["Properties"]
    assert json.dumps(props["ContainerDefinitions"][0]["Image"]).endswith(f'@{digest}"]]}}')
    assert props["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "data-team@example.com"}
    )
    template.has_output("ImagePlatform", {"Value": "linux/arm64"})
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
    with pytest.raises(ValueError, match="imageDigest must be sha256"):
        build_app({"environment": "dev", "imageDigest": "latest"}, str(tmp_path / "bad3"))
