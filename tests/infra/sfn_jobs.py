"""The emulator's container: an ECS task of the job run as a local ``dsjob run`` process.

What a task is here: the same dsjob code the image installs, started as
``python -m dsjob run`` (the image's ENTRYPOINT is ``tini -- dsjob run``) from this
virtualenv, with no image, no container and no network namespace. Its environment
is what ECS gives the job container:

* the image's own ``ENV`` that the job's behaviour depends on (UTF-8 locale, UTC,
  unbuffered Python), with ``HOME``, the working directory and ``TMPDIR`` in a fresh
  directory per task (a new task starts on empty ephemeral storage);
* the Fargate region variables (``AWS_REGION``, ``AWS_DEFAULT_REGION``) and
  ``AWS_EXECUTION_ENV=AWS_ECS_FARGATE``;
* the container definition's ``environment``, then the RunTask container override's
  ``environment`` for the container of that name, which adds to and replaces it
  (ECS API Reference, "ContainerOverride": "You can add new environment variables
  ... or you can override the existing environment variables ... from the task
  definition");
* ``AWS_ENDPOINT_URL`` pointing back at this same moto server, and fake static keys
  where ECS would serve the task role's credentials from
  ``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``.

While the process runs, DescribeTasks reports the task and container ``RUNNING``
with no exit code. When it ends, it reports them ``STOPPED`` with the container's
``exitCode`` (a process killed by signal N exits 128 + N, as tini and the container
runtime report it), ``stopCode`` ``EssentialContainerExited`` and ``stoppedReason``
"Essential container in task exited" (ECS API Reference, "Task" and "Container"),
and every line the job wrote to stdout and stderr becomes one event of the awslogs
stream ``<prefix>/<container>/<task id>``, in order, the status line last.

Not modelled: the image itself (its packages, its user 10001, its read-only
layers: the container tests build and run it), cgroup CPU and memory limits (so no
OOM kill, exit 137 stays scripted), the 120 s stop timeout and StopTask (moto's
interpreter never stops a task on a state timeout), the task role's IAM scoping,
VPC endpoints and security groups, and log delivery while the task runs (the
events are written once it stops).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.logs.models import logs_backends

from tests.support.credentials import FAKE_KEYS

# docker/Dockerfile, system-base: the ENV lines that change how Python and the job behave.
IMAGE_ENV = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
JOB_COMMAND = [sys.executable, "-m", "dsjob", "run"]
# CloudWatch Logs PutLogEvents: at most 10,000 events per call.
EVENTS_PER_CALL = 10_000
SIGNAL_EXIT_BASE = 128


@dataclass
class Job:
    """One started task: its process, where its output goes, and whether it was reported."""

    process: subprocess.Popen[bytes]
    output: Path
    root: Path
    stopped: bool = False


class JobRunner:
    """Starts a job process per RunTask and reflects its end into the task moto keeps."""

    def __init__(self, root: Path, endpoint: str) -> None:
        """Args: where the tasks' directories go; this moto server's URL."""
        self.root = root
        self.endpoint = endpoint
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def environment(self, backend: Any, task: Any, container: dict[str, Any]) -> dict[str, str]:
        """The job container's environment (see the module docstring for each layer)."""
        env = {"PATH": os.environ["PATH"], **IMAGE_ENV}
        env.update(
            AWS_REGION=backend.region_name,
            AWS_DEFAULT_REGION=backend.region_name,
            AWS_EXECUTION_ENV="AWS_ECS_FARGATE",
        )
        env.update({v["name"]: v["value"] for v in container.get("environment") or []})
        for override in task.overrides.get("containerOverrides", []):
            if override.get("name") == container["name"]:
                env.update({v["name"]: v["value"] for v in override.get("environment", [])})
        env.update(FAKE_KEYS, AWS_ENDPOINT_URL=self.endpoint)
        return env

    def start(self, backend: Any, task: Any, container: dict[str, Any]) -> dict[str, str]:
        """Start the job for a task moto just created; returns the environment it got."""
        env = self.environment(backend, task, container)
        root = self.root / task.id
        home = root / "home"
        tmp = root / "tmp"
        home.mkdir(parents=True)
        tmp.mkdir()
        env.update(HOME=str(home), TMPDIR=str(tmp))
        output = root / "output.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                JOB_COMMAND,
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                # The awslogs driver captures both streams of the container into one.
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Until the process ends, moto must not advance the task on its own.
        task._transitions = [("RUNNING", "RUNNING")]
        task.status = "RUNNING"
        task.desired_status = "RUNNING"
        job_container: Any = next(c for c in task.containers if c.name == container["name"])
        job_container.last_status = "RUNNING"
        job_container.exitCode = None
        job_container.environment = [{"name": k, "value": v} for k, v in env.items()]
        self.jobs[task.task_arn] = Job(process, output, root)
        return env

    def refresh(self, backend: Any, tasks: list[Any]) -> None:
        """Before DescribeTasks answers: a task whose process ended is stopped, its log written."""
        with self._lock:
            for task in tasks:
                job = self.jobs.get(task.task_arn)
                if job is None or job.stopped or job.process.poll() is None:
                    continue
                job.stopped = True
                self._stop(backend, task, job)

    def _stop(self, backend: Any, task: Any, job: Job) -> None:
        code = job.process.returncode
        exit_code = SIGNAL_EXIT_BASE - code if code < 0 else code
        definition: Any = backend.describe_task_definition(task.task_definition_arn)
        [container_def] = definition.container_definitions
        container: Any = next(c for c in task.containers if c.name == container_def["name"])
        container.exitCode = exit_code
        container.last_status = "STOPPED"
        task.status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stop_code = "EssentialContainerExited"
        task.stopped_reason = "Essential container in task exited"
        task.stopped_at = datetime.now(UTC)
        lines = job.output.read_text(encoding="utf-8", errors="replace").splitlines()
        write_log(backend, task, container_def, [line for line in lines if line])
        shutil.rmtree(job.root / "tmp", ignore_errors=True)

    def stop_all(self) -> None:
        """SIGTERM every job still running (the server is going away), then SIGKILL."""
        running = [j.process for j in self.jobs.values() if j.process.poll() is None]
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def write_log(backend: Any, task: Any, container: dict[str, Any], lines: list[str]) -> None:
    """Put the container's lines where the awslogs driver would: one event per line."""
    options = container["logConfiguration"]["options"]
    stream = f"{options['awslogs-stream-prefix']}/{container['name']}/{task.id}"
    logs = logs_backends[backend.account_id][backend.region_name]
    group = options["awslogs-group"]
    logs.create_log_stream(group, stream)
    now = int(time.time() * 1000)
    for start in range(0, len(lines), EVENTS_PER_CALL):
        batch = lines[start : start + EVENTS_PER_CALL]
        logs.put_log_events(group, stream, [{"timestamp": now, "message": m} for m in batch])
