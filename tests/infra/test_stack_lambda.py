"""With ``compute: lambda`` the same state machine invokes the `lambda` image's function."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from tests.infra.test_compliance import CFN_LINT, CFN_LINT_IGNORED

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.infra

DIGEST = "sha256:" + "ab" * 32


def _synth(outdir: Path, **context: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Synthesize through app.synth(), so cdk-nag's validation plugin runs and can fail it."""
    from dsjob_infra import build_app  # noqa: PLC0415 - starts jsii

    app, stack = build_app({"environment": "dev", "compute": "lambda", **context}, str(outdir))
    app.synth()
    pipeline = json.loads((outdir / f"{stack.artifact_id}.template.json").read_text())
    repository = json.loads(
        (outdir / f"{stack.repository_stack.artifact_id}.template.json").read_text()
    )
    return stack, pipeline["Resources"], repository["Resources"]


@pytest.fixture(scope="module")
def on_lambda(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Any]:
    """The dev stacks with compute: lambda and default sizes; the out dir for cfn-lint."""
    outdir = tmp_path_factory.mktemp("cdk.out.lambda")
    stack, resources, repository = _synth(outdir)
    return stack, resources, (repository, outdir)


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def _one(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    [found] = _of_type(resources, kind).values()
    properties: dict[str, Any] = found["Properties"]
    return properties


def _definition(resources: dict[str, Any]) -> dict[str, Any]:
    parts = _one(resources, "AWS::StepFunctions::StateMachine")["DefinitionString"]["Fn::Join"][1]
    definition: dict[str, Any] = json.loads(
        "".join(p if isinstance(p, str) else "TOKEN" for p in parts)
    )
    return definition


def _branch(resources: dict[str, Any]) -> dict[str, Any]:
    states: dict[str, Any] = _definition(resources)["States"]["Run job"]["Branches"][0]["States"]
    return states


def _role_statements(resources: dict[str, Any], role_prefix: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in _of_type(resources, "AWS::IAM::Policy").values()
        if any(ref["Ref"].startswith(role_prefix) for ref in policy["Properties"]["Roles"])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_function_runs_the_repository_image_with_lambda_limits(on_lambda):
    """An image function ds-preprocessing-dev: 2048 MB, 2048 MB /tmp, 15 min, traced, logged."""
    _, resources, _ = on_lambda
    function = _one(resources, "AWS::Lambda::Function")
    assert function["PackageType"] == "Image"
    assert function["FunctionName"] == "ds-preprocessing-dev"
    image = "".join(
        p if isinstance(p, str) else "" for p in function["Code"]["ImageUri"]["Fn::Join"][1]
    )
    assert image.endswith("/ds-preprocessing:latest")
    assert function["MemorySize"] == 2048
    assert function["EphemeralStorage"] == {"Size": 2048}
    assert function["Timeout"] == 900
    assert function["Architectures"] == ["x86_64"]
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Environment"]["Variables"] == {"DSJOB_PARAM_PREFIX": "/ds/preprocessing"}
    assert "ReservedConcurrentExecutions" not in function
    groups = _of_type(resources, "AWS::Logs::LogGroup").items()
    [(log_id, group)] = [(k, v) for k, v in groups if k.startswith("FunctionJobLogs")]
    assert group["Properties"]["LogGroupName"] == "/aws/lambda/ds-preprocessing-dev"
    assert group["Properties"]["RetentionInDays"] == 90
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": log_id}}


def test_no_ecs_or_vpc_is_deployed_for_lambda(on_lambda):
    """The Lambda variant has no cluster, task definition, VPC or security group."""
    _, resources, _ = on_lambda
    kinds = {v["Type"] for v in resources.values()}
    assert not {k for k in kinds if k.startswith(("AWS::ECS::", "AWS::EC2::"))}


def test_function_role_has_exactly_the_task_roles_job_grants(on_lambda, synth):
    """The function role = the Fargate task role's statements + its own log group + X-Ray."""
    _, resources, _ = on_lambda
    function = _role_statements(resources, "FunctionFunctionRole")
    task = _role_statements(synth.resources, "ComputeTaskRole")
    assert task
    by_sid = {s.get("Sid", "xray"): s for s in function}
    assert {s["Sid"]: s for s in task} == {
        k: v for k, v in by_sid.items() if k in {s["Sid"] for s in task}
    }
    extra = {k: v for k, v in by_sid.items() if k not in {s["Sid"] for s in task}}
    assert set(extra) == {"WriteFunctionLogs", "xray"}
    assert extra["WriteFunctionLogs"]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    [arn, suffix] = extra["WriteFunctionLogs"]["Resource"]["Fn::Join"][1]
    assert arn["Fn::GetAtt"][0].startswith("FunctionJobLogs")
    assert suffix == ":*"
    assert extra["xray"]["Action"] == ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]


def test_state_machine_invokes_the_function_with_the_run_as_event_fields(on_lambda):
    """LambdaInvoke of the function; DSJOB_* overrides arrive as the handler's flag names."""
    _, resources, _ = on_lambda
    invoke = _branch(resources)["Invoke function"]
    assert invoke["Resource"].endswith(":states:::lambda:invoke")
    assert invoke["Parameters"]["FunctionName"] == "TOKEN"
    payload = invoke["Parameters"]["Payload"]
    assert payload["phase"] == "single"
    assert payload["run-id.$"] == "$.run.id"
    assert payload["input-key.$"] == "$.job.inputKey"
    assert payload["scheduled-time.$"] == "$.job.scheduledTime"
    assert payload["output-prefix.$"] == "$.job.outputPrefix"
    assert payload["transform-key.$"] == "$.job.transformKey"
    assert invoke["TimeoutSeconds"] == 16 * 60
    from dsjob.config import PARAM_NAMES  # noqa: PLC0415

    # Every field is a parameter the handler accepts (an unknown one is a config error).
    assert {k.removesuffix(".$") for k in payload} <= PARAM_NAMES


def test_retries_transient_and_lambda_service_errors_only(on_lambda):
    """Block: Dsjob.Transient as on Fargate; invoke: Lambda 500s, throttling; then TaskNotPlaced."""
    from dsjob_infra.job_block import RETRYABLE_ERRORS  # noqa: PLC0415

    _, resources, _ = on_lambda
    block = _definition(resources)["States"]["Run job"]
    [retry] = block["Retry"]
    assert retry["ErrorEquals"] == RETRYABLE_ERRORS
    assert (retry["MaxAttempts"], retry["JitterStrategy"], retry["MaxDelaySeconds"]) == (
        3,
        "FULL",
        600,
    )
    assert block["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Job failed"}
    ]
    states = _branch(resources)
    [service_retry] = states["Invoke function"]["Retry"]
    assert service_retry["ErrorEquals"] == [
        "Lambda.ClientExecutionTimeoutException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    ]
    assert service_retry["MaxAttempts"] == 3
    catches = {tuple(c["ErrorEquals"]): c["Next"] for c in states["Invoke function"]["Catch"]}
    assert states[catches[tuple(service_retry["ErrorEquals"])]]["Error"] == "Dsjob.TaskNotPlaced"
    # Nothing catches everything inside: a timeout or Lambda.Unknown keeps its own name.
    assert not [names for names in catches if "States.ALL" in names or "States.TaskFailed" in names]


def test_the_handlers_error_names_are_the_ones_caught(on_lambda):
    """Each Dsjob.<Name> the handler raises is failed under that name, the status as cause."""
    from dsjob import lambda_handler  # noqa: PLC0415

    _, resources, _ = on_lambda
    states = _branch(resources)
    [dsjob_catch] = [
        c for c in states["Invoke function"]["Catch"] if c["ErrorEquals"][0].startswith("Dsjob.")
    ]
    raised = {cls.__name__ for cls in lambda_handler.WORKFLOW_ERRORS.values()}
    assert set(dsjob_catch["ErrorEquals"]) == raised
    parse = states[dsjob_catch["Next"]]
    assert parse["Parameters"] == {"payload.$": "States.StringToJson($.failure.Cause)"}
    assert states[parse["Next"]] == {
        "Type": "Fail",
        "ErrorPath": "$.failure.Error",
        "CausePath": "$.functionError.payload.errorMessage",
    }


def test_a_function_killed_for_memory_is_dsjob_out_of_memory(on_lambda):
    """Runtime.OutOfMemory, or Runtime.ExitError 'signal: killed', fails Dsjob.OutOfMemory."""
    _, resources, _ = on_lambda
    states = _branch(resources)
    [memory] = [
        c for c in states["Invoke function"]["Catch"] if "Runtime.ExitError" in c["ErrorEquals"]
    ]
    assert memory["ErrorEquals"] == ["Runtime.OutOfMemory", "Runtime.ExitError"]
    choice = states[memory["Next"]]
    [rule] = choice["Choices"]
    conditions = {json.dumps(c, sort_keys=True) for c in rule["Or"]}
    assert (
        json.dumps(
            {"StringEquals": "Runtime.OutOfMemory", "Variable": "$.failure.Error"}, sort_keys=True
        )
        in conditions
    )
    assert (
        json.dumps(
            {"StringMatches": "*signal: killed*", "Variable": "$.failure.Cause"}, sort_keys=True
        )
        in conditions
    )
    killed = states[rule["Next"]]
    assert killed["Error"] == "Dsjob.OutOfMemory"
    assert "lambdaMemoryMiB" in killed["CausePath"]
    assert states[choice["Default"]]["ErrorPath"] == "$.failure.Error"


def test_fan_out_is_refused_with_a_config_error(on_lambda):
    """An inputPrefix fails Dsjob.Config naming compute: fargate; no Map is deployed."""
    _, resources, _ = on_lambda
    definition = _definition(resources)
    route = definition["States"]["Fan out?"]
    [choice] = route["Choices"]
    refused = definition["States"][choice["Next"]]
    assert refused["Type"] == "Fail"
    assert refused["Error"] == "Dsjob.Config"
    assert "compute: fargate" in refused["Cause"]
    assert '"Type":"Map"' not in json.dumps(definition, separators=(",", ":"))


def test_state_machine_may_invoke_this_function_only(on_lambda):
    """The workflow role: lambda:InvokeFunction on the function (and versions), no ECS."""
    _, resources, _ = on_lambda
    statements = _role_statements(resources, "WorkflowStateMachineRole")
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert "lambda:InvokeFunction" in actions
    assert not {a for a in actions if a.startswith(("ecs:", "iam:PassRole"))}
    [invoke] = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert invoke["Resource"][0] == {
        "Fn::GetAtt": [next(iter(_of_type(resources, "AWS::Lambda::Function"))), "Arn"]
    }


def test_repository_lets_only_this_function_pull(on_lambda, synth):
    """The repository policy lets lambda.amazonaws.com pull for ds-preprocessing-dev only."""
    _, _, (repository, _) = on_lambda
    [statement] = _one(repository, "AWS::ECR::Repository")["RepositoryPolicyText"]["Statement"]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert statement["Action"] == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    arns = [
        "".join(p if isinstance(p, str) else "" for p in a["Fn::Join"][1])
        for a in statement["Condition"]["ArnLike"]["aws:sourceArn"]
    ]
    assert arns == [
        "arn::lambda:us-east-1:000000000000:function:ds-preprocessing-dev",
        "arn::lambda:us-east-1:000000000000:function:ds-preprocessing-dev:*",
    ]
    # The Fargate variant's repository has no policy: ECS pulls with the execution role.
    fargate = synth.repository["Resources"]
    assert "RepositoryPolicyText" not in _one(fargate, "AWS::ECR::Repository")


def test_context_sizes_the_function_and_pins_the_digest(tmp_path):
    """lambda* context and imageDigest reach the function; ARM64 is arm64."""
    _, resources, _ = _synth(
        tmp_path,
        lambdaMemoryMiB="3008",
        lambdaEphemeralStorageMiB="4096",
        lambdaTimeoutMinutes="10",
        lambdaReservedConcurrency="2",
        imageDigest=DIGEST,
        cpuArchitecture="ARM64",
    )
    function = _one(resources, "AWS::Lambda::Function")
    image = "".join(
        p if isinstance(p, str) else "" for p in function["Code"]["ImageUri"]["Fn::Join"][1]
    )
    assert image.endswith(f"/ds-preprocessing@{DIGEST}")
    assert (function["MemorySize"], function["EphemeralStorage"], function["Timeout"]) == (
        3008,
        {"Size": 4096},
        600,
    )
    assert function["ReservedConcurrentExecutions"] == 2
    assert function["Architectures"] == ["arm64"]
    assert _branch(resources)["Invoke function"]["TimeoutSeconds"] == 11 * 60


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"compute": "ec2"}, "compute must be one of"),
        ({"compute": "lambda", "lambdaTimeoutMinutes": "16"}, "lambdaTimeoutMinutes must be 1..15"),
        ({"compute": "lambda", "lambdaMemoryMiB": "100"}, "lambdaMemoryMiB must be 128..10240"),
        ({"compute": "lambda", "lambdaEphemeralStorageMiB": "20000"}, "lambdaEphemeralStorageMiB"),
        ({"compute": "lambda", "lambdaReservedConcurrency": "-1"}, "lambdaReservedConcurrency"),
    ],
)
def test_settings_outside_lambdas_quotas_fail_synth_early(context, message):
    """A compute or a function size Lambda would refuse fails before any construct is made."""
    from dsjob_infra.settings import PipelineSettings  # noqa: PLC0415

    values = {"environment": "dev", **context}
    with pytest.raises(ValueError, match=message):
        PipelineSettings.from_context(values.get)


def test_cdk_nag_and_cfn_lint_pass_on_the_lambda_templates(on_lambda):
    """cdk-nag's AwsSolutions pack and cfn-lint find nothing in the Lambda variant."""
    from cdk_nag import AwsSolutionsChecks  # noqa: PLC0415

    stack, resources, (_, outdir) = on_lambda
    report = AwsSolutionsChecks().validate_scope(stack)
    assert report.success, [v.rule_name for v in report.violations]
    templates = sorted(str(p) for p in outdir.glob("*.template.json"))
    assert len(templates) == 2
    result = subprocess.run(
        [str(CFN_LINT), "--ignore-checks", *CFN_LINT_IGNORED, "--", *templates],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    skips = {
        s["id"]
        for s in _of_type(resources, "AWS::Lambda::Function").popitem()[1]["Metadata"]["checkov"][
            "skip"
        ]
    }
    assert skips == {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173", "CKV_AWS_272"}
