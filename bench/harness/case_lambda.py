"""Case 7: the lambda image's cold start beside the prod image's `dsjob run`, same job, same AWS.

Lambda's own Runtime Interface Emulator cannot be downloaded here, so the function polls
the Runtime API stand-in the container tests use (tests/support/lambda_runtime.py) on
loopback. Both images run the 1,228-row job against one `dsjob local serve` (moto
server, seeded, SSM parameters set), alternating, each run with its own run id:

- lambda: from `run -d` to the runtime's first GET /next (init done: Python, awslambdaric,
  the handler module imported), and to the POST of the handler's response (the job ran
  and published);
- prod: from `run` to the container's exit (`dsjob run`, the same job and publish).

What this leaves out, and real Lambda adds: pulling the image into Lambda's cache (the
first cold start after a deploy is slower), and the sandbox's own start.
"""

from __future__ import annotations

import subprocess
import time
import uuid

from bench.harness.cases_more import embedded_aws
from bench.harness.measure import container_engine, image_exists, image_name, measure
from bench.harness.report import Report, span
from tests.support.credentials import FAKE_ENV
from tests.support.lambda_runtime import serving

ROWS = 1228
MEMORY_MB = 2048  # the Lambda variant's default function size (infra settings)
TIMEOUT_S = 300


def _lambda_run(
    engine: str, ref: str, aws: dict[str, str], run_id: str
) -> tuple[float, float, str]:
    """One cold start: seconds to the first /next poll, to the response, and its kind."""
    name = f"dsjob-bench-lambda-{uuid.uuid4().hex[:8]}"
    env = {**FAKE_ENV, "AWS_ENDPOINT_URL": aws["AWS_ENDPOINT_URL"]}
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    with serving() as api:
        started = time.perf_counter()
        try:
            subprocess.run(
                [
                    engine, "run", "-d", "--name", name, "--network", "host", "--read-only",
                    "--tmpfs", "/tmp:rw,size=512m", "--memory", f"{MEMORY_MB}m",
                    "-e", f"AWS_LAMBDA_RUNTIME_API={api.address}",
                    "-e", f"AWS_LAMBDA_FUNCTION_MEMORY_SIZE={MEMORY_MB}",
                    "-e", "AWS_LAMBDA_FUNCTION_NAME=dsjob",
                    *env_args, ref,
                ],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            api.alive = lambda: _running(engine, name)
            # Queued once `run -d` returns; a poll that comes earlier waits for it, so the
            # first /next hands over the invocation that caused the cold start.
            kind, _ = api.invoke({"run-id": run_id}, timeout=TIMEOUT_S)
        finally:
            subprocess.run([engine, "rm", "--force", name], capture_output=True, check=False)
        polled = (api.first_poll_at or float("nan")) - started
        answered = (api.answered_at or float("nan")) - started
    return polled, answered, kind


def _running(engine: str, name: str) -> bool:
    out = subprocess.run(
        [engine, "inspect", "--format", "{{.State.Running}}", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip() == "true"


def case_lambda_start(report: Report, runs: int) -> None:
    """Lambda cold start (to first poll, to response) beside the prod container's start-to-exit."""
    title = "7. Lambda cold start"
    engine = container_engine()
    name = image_name()
    lambda_ref, prod_ref = f"{name}:lambda", f"{name}:prod"
    missing = [r for r in (lambda_ref, prod_ref) if engine and not image_exists(engine, r)]
    if engine is None or missing:
        why = "no working container engine" if engine is None else f"missing {missing}"
        report.add(title, f"not run: {why} (`make ml-build-prod ml-build-lambda`)")
        return
    polls: list[float] = []
    answers: list[float] = []
    prod: list[float] = []
    kinds: list[str] = []
    codes: list[int] = []
    with embedded_aws(ROWS) as aws:
        if aws is None:
            report.add(title, "not run: `dsjob local serve` did not start")
            return
        env_args = [
            arg
            for key, value in {**FAKE_ENV, "AWS_ENDPOINT_URL": aws["AWS_ENDPOINT_URL"]}.items()
            for arg in ("-e", f"{key}={value}")
        ]
        for i in range(runs):
            polled, answered, kind = _lambda_run(engine, lambda_ref, aws, f"bench-lambda-{i}")
            polls.append(polled)
            answers.append(answered)
            kinds.append(kind)
            sample = measure(
                [engine, "run", "--rm", "--network", "host", "--memory", f"{MEMORY_MB}m",
                 *env_args, prod_ref, "--run-id", f"bench-prod-{i}"],
                timeout=TIMEOUT_S,
            )  # fmt: skip
            prod.append(sample.wall)
            codes.append(sample.returncode)
    lines = [
        f"| {ROWS:,}-row job against `dsjob local serve`, {MEMORY_MB} MB | s, median (min-max) |",
        "|---|---|",
        f"| lambda: `{engine} run -d` to the first /next poll (init) | {span(polls)} |",
        f"| lambda: `{engine} run -d` to the handler's response | {span(answers)} |",
        f"| prod: `{engine} run` (`dsjob run`) to exit | {span(prod)} |",
        f"| lambda answers | {', '.join(kinds)} |",
        f"| prod exit codes | {', '.join(str(c) for c in codes)} |",
        "",
        (
            "The Runtime API is the loopback stand-in of the container tests "
            "(tests/support/lambda_runtime.py), not Lambda's emulator; Lambda's image pull "
            "and sandbox start are not in these numbers. Runs alternate lambda/prod. Init "
            "imports only the handler module; duckdb and boto3 load in the first invocation."
        ),
    ]
    report.add(title, "\n".join(lines))
