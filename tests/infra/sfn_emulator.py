"""A moto server that executes state machines, with the gaps the workflow needs filled.

Run from the repository root as one of::

    python -m tests.infra.sfn_emulator PORT scripted OUTCOMES_JSON
    python -m tests.infra.sfn_emulator PORT jobs WORK_DIR

It serves until killed. In ``scripted`` mode each ECS task's outcome is scripted
(gap 3 below); in ``jobs`` mode each ECS task really runs the job: a ``dsjob run``
process with the task's environment, talking to this same server, whose exit and
output become the task's DescribeTasks answer and awslogs stream
(:mod:`tests.infra.sfn_jobs` says exactly what that stands in for and what it
does not model).

moto 5.2.5 carries a port of LocalStack's ASL interpreter (enabled here with the
``stepfunctions.execute_state_machine`` config), and its ECS ``runTask.sync``
integration calls moto's own ECS.  These gaps stand between that and our
definition, and only these are changed:

1. The port left request/response normalisation as stubs: service integrations
   receive Step Functions' PascalCase parameters (``Cluster``) unchanged and
   hand back boto's camelCase output (``tasks``).  Restored here from the boto
   service model with the interpreter's own ``_to_boto_request`` /
   ``_from_boto_response`` helpers, as LocalStack does.
2. The aws-sdk service name ``cloudwatchlogs`` (Step Functions' name for
   CloudWatch Logs) is mapped to boto's ``logs``.
3. There is no container: moto's ECS task always "exits" 0.  In ``jobs`` mode the
   job runs as a local process (see above).  In ``scripted`` mode the test scripts
   what the container would have done per run (the ``DSJOB_RUN_ID`` override,
   optionally ``/<phase>`` and ``/<input key or partition>``): an exit code (or
   none, for a task that never started), a stopped reason, a ``StopCode``, the
   container's ``Reason``, a GuardDuty sidecar listed before the job container
   (ECS API Reference, "Task": ``containers`` has no defined order), and the
   status line the job prints last, written to the task's awslogs stream as the
   awslogs driver would.  ``"failures"`` makes RunTask start nothing and answer
   with that Failures list (ECS API Reference, "RunTask", "Failure"); the
   state then fails with ``AmazonECS.Unknown``, as Step Functions does when RunTask
   places nothing (our model: moto has no such path, it indexes ``Tasks[0]``).

4. moto wraps the value of a definite path through an array index
   (``$.task.Containers[0].ExitCode``) in a one-element list (its fix for
   moto#7825); Step Functions returns the value itself.  Restored for paths
   without wildcards, slices or filters.  Conversely moto unwraps a filter
   (``[?(@.Name == 'job')]``) that matches once; Step Functions always returns
   a filter's matches as a list ("Paths" in the Developer Guide).  Restored.
5. moto's ECS ``.sync`` returns the stopped task as output whatever the exit
   code; Step Functions fails the state with ``States.TaskFailed`` and the task
   description as JSON cause when the essential container (here: the one named
   ``job``; the sidecar is not essential) exits non-zero or never starts.  That
   behaviour is the default here; an outcome with ``"sync_output": true``
   keeps moto's, so both shapes reach the workflow.
6. moto counts a distributed map's failed items but never applies
   ``ToleratedFailurePercentage``: the map succeeds whatever failed, and with real
   jobs the reduce and commit would then publish the objects that did map.  Step
   Functions fails the map run with ``States.ExceedToleratedFailureThreshold`` once
   the failed items exceed that percentage of all items (Developer Guide, "Using
   Map state in Distributed mode", failure threshold).  Applied here for the
   percentage, the one threshold our definition sets.
7. Some of moto's error answers carry no request id, and the interpreter's aws-sdk
   integration then fails on a ``KeyError`` (``States.Runtime``, which no Catch
   takes) instead of with the service's error.  An empty request id is filled in,
   so the state fails with the service's error, as it would on AWS.

Everything else — Choice, Retry with backoff and jitter, Catch, Parallel,
Map, ItemReader (ListObjectsV2), intrinsic functions, Fail's ErrorPath/CausePath,
ECS RunTask/DescribeTasks, S3 GetObject and CloudWatch Logs GetLogEvents against
moto — is moto's own.  Known moto gaps left as they are (tests say so): a
distributed map's ResultWriter writes only the manifest, no result files; child
executions run inline (no ListExecutions by map run, so the workflow's look-up
of the failed child's error fails and the map's own error stays the cause).
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from types import FunctionType
from typing import Any, cast

from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.session import get_session

PORT, MODE, PATH = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if MODE not in ("scripted", "jobs"):
    sys.exit(f"mode must be scripted or jobs, not {MODE!r}")
OUTCOMES = PATH
# boto_client_for() in moto's interpreter calls back into this server on MOTO_PORT.
os.environ["MOTO_PORT"] = PORT

from moto.core.config import default_user_config  # noqa: E402 - needs MOTO_PORT first
from moto.ecs.models import EC2ContainerServiceBackend  # noqa: E402
from moto.server import main  # noqa: E402
from moto.stepfunctions.parser.api import HistoryEventType  # noqa: E402
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (  # noqa: E402
    CustomErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (  # noqa: E402
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (  # noqa: E402
    StatesErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (  # noqa: E402
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (  # noqa: E402
    distributed_iteration_component,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (  # noqa: E402
    state_task_service,
    state_task_service_aws_sdk,
    state_task_service_ecs,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails  # noqa: E402
from moto.stepfunctions.parser.asl.utils import json_path  # noqa: E402
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str  # noqa: E402

from tests.infra.sfn_jobs import JobRunner, write_log  # noqa: E402

_BOTO = get_session()
_ATTEMPTS: dict[str, int] = defaultdict(int)
_SYNC_OUTPUT: set[str] = set()  # task ARNs whose .sync keeps moto's success-shaped output
_FAILURES: list[dict[str, Any]] = []  # the Failures of the last RunTask that started nothing
JOB_CONTAINER = "job"
JOBS = JobRunner(PATH, f"http://127.0.0.1:{PORT}") if MODE == "jobs" else None


def _operation(service: str, action: str) -> Any:
    model = _BOTO.get_service_model(service)
    for name in model.operation_names:
        if xform_name(name) == action:
            return model.operation_model(name)
    return None


def _normalise_parameters(
    self: Any,
    parameters: dict[str, Any],
    boto_service_name: str | None = None,
    service_action_name: str | None = None,
) -> None:
    service = self._get_boto_service_name(boto_service_name=boto_service_name)
    action = self._get_boto_service_action(service_action_name=service_action_name)
    operation = _operation(service, action)
    if operation is not None and operation.input_shape is not None:
        self._to_boto_request(parameters, operation.input_shape)


def _normalise_response(
    self: Any,
    response: Any,
    boto_service_name: str | None = None,
    service_action_name: str | None = None,
) -> None:
    service = self._get_boto_service_name(boto_service_name=boto_service_name)
    action = self._get_boto_service_action(service_action_name=service_action_name)
    operation = _operation(service, action)
    if operation is not None and operation.output_shape is not None:
        self._from_boto_response(response, operation.output_shape)


StateTaskService = state_task_service.StateTaskService
StateTaskService._normalise_parameters = _normalise_parameters  # type: ignore[method-assign]
StateTaskService._normalise_response = _normalise_response  # type: ignore[method-assign]
StateTaskService._SERVICE_NAME_SFN_TO_BOTO_OVERRIDES["cloudwatchlogs"] = "logs"

_original_run_task = EC2ContainerServiceBackend.run_task


def _outcome(outcomes: dict[str, Any], environment: dict[str, str]) -> dict[str, Any]:
    """The scripted outcome for this task's attempt: most specific key first."""
    run_id = environment.get("DSJOB_RUN_ID", "")
    phase = environment.get("DSJOB_PHASE", "")
    detail = environment.get("DSJOB_INPUT_KEY") or environment.get("DSJOB_PARTITION") or ""
    keys = [f"{run_id}/{phase}/{detail}", f"{run_id}/{phase}", run_id]
    key = next((k for k in keys if k in outcomes), keys[0])
    attempt = _ATTEMPTS[key]
    _ATTEMPTS[key] += 1
    script = outcomes.get(key, [{"exit_code": 0}])
    return dict(script[min(attempt, len(script) - 1)])


def _run_task(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Any:
    """Moto's RunTask, then the job process, or what the scripted container did."""
    started = _original_run_task(self, *args, **kwargs)
    if JOBS is not None:
        for task in started:
            definition: Any = self.describe_task_definition(task.task_definition_arn)
            [job] = [c for c in definition.container_definitions if c["name"] == JOB_CONTAINER]
            JOBS.start(self, task, job)
        return started
    outcomes = json.loads(OUTCOMES.read_text()) if OUTCOMES.exists() else {}
    for task in started:
        environment = {
            variable["name"]: variable["value"]
            for override in task.overrides.get("containerOverrides", [])
            for variable in override.get("environment", [])
        }
        outcome = _outcome(outcomes, environment)
        if outcome.get("failures"):
            # RunTask placed nothing: the answer is the Failures list and no task.
            _FAILURES[:] = outcome["failures"]
            self.tasks[task.cluster_name].pop(task.task_arn)
            return []
        if outcome.get("sync_output"):
            _SYNC_OUTPUT.add(task.task_arn)
        # moto's models are typed for what moto sets; the emulator adds ECS fields it lacks.
        container: Any = task.containers[0]
        stopped: Any = task
        container.exitCode = outcome.get("exit_code")
        if outcome.get("container_reason"):
            container.reason = outcome["container_reason"]
        task.stopped_reason = outcome.get("stopped_reason", "Essential container in task exited")
        if outcome.get("stop_code"):
            stopped.stop_code = outcome["stop_code"]
        container.environment = [{"name": k, "value": v} for k, v in environment.items()]
        if outcome.get("sidecar_first"):
            # The GuardDuty agent: not essential, still running when the job stops.
            sidecar: Any = copy.copy(container)
            sidecar.name = "aws-guardduty-agent-Ab12Cd"
            sidecar.image = "aws-guardduty-agent-fargate:v1.6.0"
            sidecar.exitCode = None
            sidecar.environment = []
            task.containers.insert(0, sidecar)
        if outcome.get("status_line") is not None:
            _log(self, task, outcome["status_line"])
    return started


def _log(backend: EC2ContainerServiceBackend, task: Any, line: str) -> None:
    """Write the job's last stdout line where the awslogs driver would put it."""
    definition: Any = backend.describe_task_definition(task.task_definition_arn)
    write_log(backend, task, definition.container_definitions[0], [line])


_original_describe_tasks = EC2ContainerServiceBackend.describe_tasks


def _describe_tasks(self: EC2ContainerServiceBackend, cluster_str: str, tasks: list[str]) -> Any:
    """Moto's DescribeTasks; in jobs mode a task whose process ended is reported stopped."""
    found = _original_describe_tasks(self, cluster_str, tasks)
    if JOBS is not None:
        JOBS.refresh(self, found)
    return found


EC2ContainerServiceBackend.run_task = _run_task  # type: ignore[method-assign]
EC2ContainerServiceBackend.describe_tasks = _describe_tasks  # type: ignore[method-assign]

EcsService = state_task_service_ecs.StateTaskServiceEcs
_original_sync_resolver: Any = EcsService._build_sync_resolver


def _build_sync_resolver(self: Any, env: Any, *args: Any, **kwargs: Any) -> Any:
    """Moto's resolver, failing with States.TaskFailed as AWS does on a bad exit."""
    resolve = _original_sync_resolver(self, env, *args, **kwargs)

    def _resolve() -> Any:
        stopped = resolve()
        if stopped is None or stopped["TaskArn"] in _SYNC_OUTPUT:
            return stopped
        [job] = [c for c in stopped["Containers"] if c.get("Name") == JOB_CONTAINER]
        if job.get("ExitCode") == 0:
            return stopped
        cause = to_json_str(stopped)
        raise FailureEventException(
            FailureEvent(
                env=env,
                error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                event_type=HistoryEventType.TaskFailed,
                event_details=cast(
                    "EventDetails",
                    {
                        "taskFailedEventDetails": {
                            "resource": self._get_sfn_resource(),
                            "resourceType": self._get_sfn_resource_type(),
                            "error": StatesErrorNameType.StatesTaskFailed.to_name(),
                            "cause": cause,
                        }
                    },
                ),
            )
        )

    return _resolve


EcsService._build_sync_resolver = _build_sync_resolver  # type: ignore[method-assign]
_original_eval_service_task: Any = EcsService._eval_service_task


def _eval_service_task(self: Any, env: Any, *args: Any, **kwargs: Any) -> Any:
    """Moto's RunTask call; a RunTask that started nothing fails with AmazonECS.Unknown."""
    _FAILURES.clear()
    try:
        return _original_eval_service_task(self, env, *args, **kwargs)
    except IndexError:  # moto reads Tasks[0] of an answer that has none
        if not _FAILURES:
            raise
        failures = [
            {
                "Arn": f["arn"],
                "Reason": f["reason"],
                **({"Detail": f["detail"]} if "detail" in f else {}),
            }
            for f in _FAILURES
        ]
        raise FailureEventException(
            FailureEvent(
                env=env,
                error_name=CustomErrorName("AmazonECS.Unknown"),
                event_type=HistoryEventType.TaskFailed,
                event_details=cast(
                    "EventDetails",
                    {
                        "taskFailedEventDetails": {
                            "resource": self._get_sfn_resource(),
                            "resourceType": self._get_sfn_resource_type(),
                            "error": "AmazonECS.Unknown",
                            "cause": to_json_str({"Failures": failures, "Tasks": []}),
                        }
                    },
                ),
            )
        ) from None


EcsService._eval_service_task = _eval_service_task  # type: ignore[method-assign]


AwsSdk = state_task_service_aws_sdk.StateTaskServiceAwsSdk
_original_sdk_from_error: Any = AwsSdk._from_error


def _sdk_from_error(self: Any, env: Any, ex: Exception) -> Any:
    """Moto's aws-sdk error mapping, for an error answer that has no request id too."""
    if isinstance(ex, ClientError):
        response: dict[str, Any] = cast("dict[str, Any]", ex.response)
        response.setdefault("ResponseMetadata", {}).setdefault("RequestId", "")
    return _original_sdk_from_error(self, env, ex)


AwsSdk._from_error = _sdk_from_error  # type: ignore[method-assign]
Distributed = distributed_iteration_component.DistributedIterationComponent
_original_map_run: Any = Distributed._map_run


def _map_run(self: Any, env: Any, eval_input: Any) -> None:
    """Moto's map run, then the failure threshold Step Functions applies to it."""
    _original_map_run(self, env, eval_input)
    record = eval_input.map_run_record
    failed, total = record.item_counter.failed.get(), record.item_counter.total.get()
    if total and failed * 100 > record.tolerated_failure_percentage * total:
        error = StatesErrorNameType.StatesExceedToleratedFailureThreshold.to_name()
        cause = (
            f"{failed} of {total} items failed, above the tolerated "
            f"{record.tolerated_failure_percentage}%"
        )
        raise FailureEventException(
            FailureEvent(
                env=env,
                error_name=StatesErrorName(
                    typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold
                ),
                event_type=HistoryEventType.MapRunFailed,
                event_details=cast(
                    "EventDetails",
                    {"mapRunFailedEventDetails": {"error": error, "cause": cause}},
                ),
            )
        )


Distributed._map_run = _map_run  # type: ignore[method-assign]


def _definite_extract_json(path: str, data: Any) -> Any:
    """Runs with json_path's globals (its __code__ replaces moto's extract_json)."""
    matches = parse(path).find(data)  # type: ignore[name-defined]  # noqa: F821
    if "?(" in path:
        return [match.value for match in matches]
    definite = not any(mark in path for mark in ("*", ":", "?", ".."))
    if definite and len(matches) == 1:
        return matches[0].value
    return _moto_extract_json(path, data)  # type: ignore[name-defined]  # noqa: F821


# Every interpreter module imported extract_json by name: swap the code, not the binding.
json_path._moto_extract_json = FunctionType(  # type: ignore[attr-defined]
    json_path.extract_json.__code__, json_path.__dict__, "_moto_extract_json"
)
json_path.extract_json.__code__ = _definite_extract_json.__code__
default_user_config["stepfunctions"]["execute_state_machine"] = True

if __name__ == "__main__":
    if JOBS is not None:
        # moto's SIGTERM handler exits through sys.exit: the jobs go with the server.
        atexit.register(JOBS.stop_all)
    main(["--host", "127.0.0.1", "--port", PORT])
