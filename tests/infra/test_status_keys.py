"""Each fan-out task's failure cause is read from its own status object, the key dsjob writes."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from dsjob import config
from dsjob.status import status_key, task_name

if TYPE_CHECKING:
    from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra


def _definition(synth: Synth) -> dict[str, Any]:
    parts = synth.one("AWS::StepFunctions::StateMachine")["DefinitionString"]["Fn::Join"][1]
    definition: dict[str, Any] = json.loads(
        "".join(p if isinstance(p, str) else "TOKEN" for p in parts)
    )
    return definition


def _read_key(states: dict[str, Any], prefix: str) -> str:
    branch = states[f"{prefix}Run job"]["Branches"][0]["States"]
    key: str = branch[f"{prefix}Read status object"]["Parameters"]["Key.$"]
    return key


def _format(expression: str, values: dict[str, str]) -> str:
    """Evaluate ``States.Format('...{}...', $.a, $.b)`` with `values` by path."""
    match = re.fullmatch(r"States\.Format\('(.*)', (.*)\)", expression)
    assert match, expression
    template, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
    for arg in args:
        template = template.replace("{}", values[arg], 1)
    return template


def _cfg(**given: str) -> config.JobConfig:
    env = {"DSJOB_OUTPUT_BUCKET": "out", "DSJOB_INPUT_BUCKET": "in", **given}
    return config.resolve({"run-id": "r-1"}, env, None)


def test_every_fan_out_task_reads_the_status_key_dsjob_writes(synth: Synth) -> None:
    """Map, reduce and commit read status/<run>/<task>.json, single status/<run>.json, as dsjob."""
    states = _definition(synth)["States"]
    run = states["Status key (parameter prefix)"]["Parameters"]
    assert run["statusKey.$"] == "States.Format('processed/status/{}.json', $.run.id)"
    folder = _format(run["taskStatusPrefix.$"], {"$.run.id": "r-1"})
    assert folder == "processed/status/r-1/"
    assert _read_key(states, "") == "$.run.statusKey"
    paths = {"$.run.taskStatusPrefix": folder, "$.key": "raw/members/a.csv", "$.partition": "3"}
    blocks = {
        "Map ": (states["Map objects"]["ItemProcessor"]["States"], {"DSJOB_PHASE": "map"}),
        "Reduce ": (
            states["Reduce partitions"]["ItemProcessor"]["States"],
            {"DSJOB_PHASE": "reduce", "DSJOB_PARTITION": "3"},
        ),
        "Commit ": (states, {"DSJOB_PHASE": "commit"}),
    }
    keys = set()
    for prefix, (where, env) in blocks.items():
        cfg = _cfg(DSJOB_INPUT_KEY="raw/members/a.csv", DSJOB_OUTPUT_PREFIX="processed/", **env)
        expected = status_key("processed/", "r-1", task_name(cfg))
        assert _format(_read_key(where, prefix), paths) == expected
        keys.add(expected)
    assert keys == {
        "processed/status/r-1/map/raw/members/a.csv.json",
        "processed/status/r-1/reduce-3.json",
        "processed/status/r-1/commit.json",
    }
