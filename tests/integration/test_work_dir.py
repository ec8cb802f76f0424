"""The run's work dir through the CLI: made under --work-root, kept only with DSJOB_KEEP_WORK=1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.credentials import client
from tests.support.paths import DSJOB

if TYPE_CHECKING:
    from tests.support.emulator import LocalServe

pytestmark = pytest.mark.integration

ART = "dsjob-artifacts"
SCRIPT_KEY = "jobs/script.py"
# Writes one data file and, as a second output, the work dir it ran in: the only
# witness of where the run worked once the dir is gone. The scratch file is what a
# script leaves behind for someone debugging it.
SCRIPT = (
    "import dsjob\n"
    "ctx = dsjob.context()\n"
    "(ctx.output_dir / 'data.csv').write_text('id\\n1\\n2\\n')\n"
    "(ctx.output_dir / 'where.txt').write_text(str(ctx.work_dir))\n"
    "(ctx.work_dir / 'scratch.txt').write_text('left by the script')\n"
)


def run(aws: LocalServe, root: Path, run_id: str, **env: str) -> dict[str, Any]:
    """`dsjob run --work-root ROOT` with the seeded input and SCRIPT; its JSON status."""
    proc = subprocess.run(
        [str(DSJOB), "run", "--work-root", str(root), "--run-id", run_id],
        env=aws.env(DSJOB_SCRIPT_KEY=SCRIPT_KEY, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    status: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return status


def worked_in(aws: LocalServe, status: dict[str, Any]) -> Path:
    """The work dir the script reported, read back from its published where_*.txt."""
    [uri] = [u for u in status["outputs"] if u.rsplit("/", 1)[-1].startswith("where_")]
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = client("s3", aws.endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(body.decode())


def test_work_dir_is_under_work_root_and_kept_only_when_asked(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """The run's dir is made under --work-root, kept whole with DSJOB_KEEP_WORK=1, else removed."""
    s3 = client("s3", local_aws.endpoint)
    s3.put_object(Bucket=ART, Key=SCRIPT_KEY, Body=SCRIPT.encode())
    root = tmp_path / "work-root"
    root.mkdir()

    kept = worked_in(local_aws, run(local_aws, root, "kept", DSJOB_KEEP_WORK="1"))
    assert kept.parent == root
    assert kept.name.startswith("dsjob-kept-")
    assert list(root.iterdir()) == [kept]
    held = sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file())
    assert held == [
        "inputs/input/members.csv",
        "inputs/script/script.py",
        "output/data.csv",
        "output/where.txt",
        "scratch.txt",
    ]
    # The downloads are the objects' bytes, so a failed run can be replayed from them.
    raw = s3.get_object(Bucket="dsjob-input", Key="raw/members.csv")["Body"].read()
    assert (kept / "inputs/input/members.csv").read_bytes() == raw
    assert (kept / "inputs/script/script.py").read_text() == SCRIPT

    gone = worked_in(local_aws, run(local_aws, root, "gone"))
    assert gone.parent == root
    assert gone.name.startswith("dsjob-gone-")
    assert list(root.iterdir()) == [kept]  # this run's dir removed, the kept one untouched
