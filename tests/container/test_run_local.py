"""`make ml-run-local`: the prod image against `dsjob local serve`, with the user's own files."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.paths import DSJOB, REPO

if TYPE_CHECKING:
    from pathlib import Path

    from .imagekit import BuiltImage, Engine

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]  # on top of the builds


def make_run_local(
    engine: Engine, image: BuiltImage, **files: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`make ml-run-local NAME=file ...` on `image`; (its status line, its JSON log records)."""
    image_name = image.tag.rsplit(":", 1)[0]
    assignments = [f"{name}={path}" for name, path in files.items()]
    proc = subprocess.run(
        ["make", "-s", "ml-run-local", f"CONTAINER_ENGINE={engine.command}",
         f"IMAGE_NAME={image_name}", *assignments],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DSJOB_", "AWS_"))},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # run-local.sh keeps the container's streams apart: the status line is the last
    # stdout line (README), the job's JSON log records are on stderr.
    status: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert "level" not in status, status  # a log record is not the status line
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return status, [r for r in records if "level" in r]


def resolved(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The configuration the job in the container resolved (its 'config resolved' record)."""
    [config] = [r["config"] for r in records if r["message"] == "config resolved"]
    return dict(config)


def test_ml_run_local_runs_the_given_input_transform_script_and_package(
    engine: Engine, prod_image: BuiltImage, tmp_path: Path
) -> None:
    """INPUT= and TRANSFORM= (then SCRIPT= and PACKAGE=) are mounted into the prod image and run."""
    data = tmp_path / "people.csv"
    data.write_text("id,name\n1,a\n2,b\n3,c\n", encoding="utf-8")
    sql = tmp_path / "drop_two.sql"
    sql.write_text("SELECT * FROM input WHERE id <> 2", encoding="utf-8")
    status, records = make_run_local(engine, prod_image, INPUT=data, TRANSFORM=sql)
    assert (status["status"], status["rows_in"], status["rows_out"]) == ("succeeded", 3, 2)
    config = resolved(records)
    assert (config["input"], config["transform"]) == (
        "/mnt/dsjob/input/people.csv",
        "/mnt/dsjob/transform/drop_two.sql",
    )
    assert config["sources"]["input"] == config["sources"]["transform"] == "flag"

    members = tmp_path / "members.csv"
    subprocess.run(
        [str(DSJOB), "sample", "-o", str(members), "--rows", "300"], check=True, capture_output=True
    )
    subprocess.run(
        [str(DSJOB), "pack", str(REPO / "examples"), "--no-upload", "--out", str(tmp_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    status, records = make_run_local(
        engine,
        prod_image,
        INPUT=members,
        SCRIPT=REPO / "examples" / "script.py",
        PACKAGE=tmp_path / "package.tar.gz",
    )
    assert (status["status"], status["rows_in"]) == ("succeeded", 300)
    config = resolved(records)
    assert (config["script"], config["package"]) == (
        "/mnt/dsjob/script/script.py",
        "/mnt/dsjob/package/package.tar.gz",
    )
    [summary] = [r for r in records if r["message"] == "run summary"]
    assert summary["mode"] == "script"
