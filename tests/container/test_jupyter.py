"""`make ml-jupyter` in the dev image: token auth, user-owned files, notebooks, a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import start_local_serve
from tests.support.credentials import FAKE_ENV
from tests.support.paths import REPO
from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import LocalServe

    from .imagekit import BuiltImage, Engine

pytestmark = [pytest.mark.container, pytest.mark.browser]

# CI keeps this directory as a build artifact; docs/img/jupyterlab.png is a copy of one run's.
SCREENSHOT = REPO / "artifacts" / "jupyterlab.png"
NOTEBOOKS = {"01-explore.ipynb", "02-write-your-script.ipynb"}
START_TIMEOUT_S = 120
# Debian's chromium, headless, as root in a container-less CI: no sandbox, no GPU, no
# background traffic; virtual time lets the Lab's JavaScript finish before the capture.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
    "--virtual-time-budget=15000",
)


@dataclass
class Lab:
    """A JupyterLab started by `make ml-jupyter` on the host's loopback."""

    port: int
    token: str
    name: str
    workspace: Path
    log: Path

    @property
    def base(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"


def http_status(url: str, token: str | None = None, *, method: str = "GET") -> int:
    """The HTTP status of a request (Authorization: token when given); 0 when nothing answers."""
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return 0


def api(lab: Lab, path: str, *, method: str = "GET", body: object = None) -> object:
    """A JSON call to the Jupyter server API, authenticated with the token."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{lab.base}{path}", data=data, method=method)
    request.add_header("Authorization", f"token {lab.token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; a failure (not a skip) when DSJOB_REQUIRE_BROWSER=1 and it is missing."""
    path = os.environ.get("DSJOB_CHROMIUM") or shutil.which("chromium")
    if not path:
        message = "chromium is not installed (scripts/ci/setup-browser.sh installs it)"
        if os.environ.get("DSJOB_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless chromium once with its own profile directory."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class _ListingParser(HTMLParser):
    """Collects the file names JupyterLab's file browser rendered (jp-DirListing-itemText)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self._depth = 0  # > 0 while inside an item's text element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        del tag
        classes = (dict(attrs).get("class") or "").split()
        if self._depth:
            self._depth += 1
        elif "jp-DirListing-itemText" in classes:
            self._depth = 1

    def handle_endtag(self, tag: str) -> None:
        del tag
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth and data.strip():
            self.names.append(data.strip())


def listed_files(dom: str) -> set[str]:
    """The names in the rendered file browser of a dumped Lab page."""
    parser = _ListingParser()
    parser.feed(dom)
    return set(parser.names)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (and proof that it is a PNG)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of the repository's files (tracked and new, not ignored): what a clone has."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    dest = tmp_path_factory.mktemp("workspace")
    for name in filter(None, listing.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def emulator() -> Iterator[LocalServe]:
    """`dsjob local serve` on the host's loopback, for the Lab container to reach."""
    server = start_local_serve()
    try:
        yield server
    finally:
        server.stop()


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (make, the script, the engine client), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def lab(
    engine: Engine,
    dev_image: BuiltImage,
    workspace: Path,
    emulator: LocalServe,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    """`make ml-jupyter` in the workspace, in the foreground as a user runs it, no token given."""
    port = free_port()
    name = f"dsjob-test-jupyter-{port}"
    log = tmp_path_factory.mktemp("lab") / "ml-jupyter.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JUPYTER_"))}
    env.update(
        CONTAINER_ENGINE=engine.name,
        DEV_IMAGE=dev_image.ref,
        JUPYTER_PORT=str(port),
        JUPYTER_NAME=name,
        AWS_ENDPOINT_URL=emulator.endpoint,
    )
    env.update(FAKE_ENV)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "ml-jupyter"],
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        token = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"make ml-jupyter exited:\n{log.read_text()}"
            match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read_text())
            if match:
                token = match.group(1)
                if http_status(f"http://127.0.0.1:{port}/api/status", token) == 200:
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")
        assert token is not None
        yield Lab(port=port, token=token, name=name, workspace=workspace, log=log)
    finally:
        stop_process_group(proc)
        engine("rm", "-f", name, check=False)


def test_api_answers_with_the_printed_token_and_refuses_without(lab: Lab) -> None:
    """/api/status: 200 with the generated token make printed, 403 without or with a wrong one."""
    assert len(lab.token) >= 32, "the generated token is too short to be a secret"
    assert http_status(f"{lab.base}/api/status", lab.token) == 200
    assert http_status(f"{lab.base}/api/status") == 403
    assert http_status(f"{lab.base}/api/status", "not-the-token") == 403
    assert http_status(f"{lab.base}/api/contents/notebooks") == 403


def test_lab_serves_the_mounted_repository(lab: Lab) -> None:
    """The contents API lists the workspace's notebooks: the repo is mounted at the Lab's root."""
    listing = api(lab, "/api/contents/notebooks")
    assert isinstance(listing, dict)
    assert {item["name"] for item in listing["content"]} >= NOTEBOOKS


def test_files_created_in_the_lab_belong_to_the_user(lab: Lab) -> None:
    """A file saved through JupyterLab appears in the workspace owned by the host user."""
    name = f"ownership-check-{lab.port}.txt"
    api(
        lab,
        f"/api/contents/{name}",
        method="PUT",
        body={"type": "file", "format": "text", "content": "written from JupyterLab\n"},
    )
    created = lab.workspace / name
    assert created.read_text() == "written from JupyterLab\n"
    assert (created.stat().st_uid, created.stat().st_gid) == (os.getuid(), os.getgid())


def test_headless_chromium_renders_the_lab_with_the_notebooks(
    lab: Lab, chromium: str, tmp_path: Path
) -> None:
    """Chromium's rendered DOM of the Lab file browser lists both notebooks; screenshot kept."""
    tree = f"{lab.base}/lab/tree/notebooks"
    dom = run_chromium(chromium, tmp_path, "--dump-dom", f"{tree}?token={lab.token}").stdout
    assert listed_files(dom) >= NOTEBOOKS, listed_files(dom)

    # Without the token the same page is the login form: the check above can fail.
    refused = run_chromium(chromium, tmp_path, "--dump-dom", tree).stdout
    assert not listed_files(refused) & NOTEBOOKS

    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    run_chromium(
        chromium,
        tmp_path,
        f"--screenshot={SCREENSHOT}",
        f"{lab.base}/lab/tree/notebooks/01-explore.ipynb?token={lab.token}",
    )
    assert png_size(SCREENSHOT) == (1280, 800)
    # A blank or error page compresses to a few KB; the Lab with a notebook open does not.
    assert SCREENSHOT.stat().st_size > 40_000


def test_notebook_runs_in_the_lab_container_against_the_host_emulator(
    lab: Lab, engine: Engine, emulator: LocalServe
) -> None:
    """01-explore executes inside the Lab container, reaching `dsjob local serve` on the host."""
    result = engine(
        "exec",
        lab.name,
        "jupyter",
        "execute",
        "--output=/tmp/01-explore.out.ipynb",
        "notebooks/01-explore.ipynb",
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    executed = engine("exec", lab.name, "cat", "/tmp/01-explore.out.ipynb").stdout
    assert f"using the emulator at {emulator.endpoint}" in executed
    assert "'rows': 1228" in executed


def test_explicit_token_is_used_as_given(
    engine: Engine, dev_image: BuiltImage, workspace: Path
) -> None:
    """With JUPYTER_TOKEN set, scripts/jupyter.sh start serves with exactly that token."""
    port = free_port()
    name = f"dsjob-test-jupyter-{port}"
    token = "explicit-token-" + os.urandom(8).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JUPYTER_"))}
    env.update(
        CONTAINER_ENGINE=engine.name,
        DEV_IMAGE=dev_image.ref,
        JUPYTER_PORT=str(port),
        JUPYTER_NAME=name,
        JUPYTER_TOKEN=token,
    )
    try:
        started = subprocess.run(
            [str(workspace / "scripts" / "jupyter.sh"), "start"],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 30,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"http://127.0.0.1:{port}/lab?token={token}"
        assert http_status(f"http://127.0.0.1:{port}/api/status", token) == 200
        assert http_status(f"http://127.0.0.1:{port}/api/status") == 403
    finally:
        subprocess.run(
            [str(workspace / "scripts" / "jupyter.sh"), "stop"],
            cwd=workspace,
            env=env,
            capture_output=True,
            check=False,
        )
    assert name not in engine("ps", "-a", "--format", "{{.Names}}").stdout.split()


def test_ml_shell_is_the_same_container_setup(
    engine: Engine, dev_image: BuiltImage, workspace: Path
) -> None:
    """`make ml-shell` runs the dev image's venv on the mounted workspace, as the host user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JUPYTER_"))}
    env.update(CONTAINER_ENGINE=engine.name, DEV_IMAGE=dev_image.ref)
    commands = (
        "command -v python\n"
        'python -c "import dsjob; print(dsjob.__file__)"\n'
        "touch /workspace/made-in-ml-shell\n"
    )
    result = subprocess.run(
        ["make", "--no-print-directory", "ml-shell"],
        cwd=workspace,
        env=env,
        input=commands,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["/opt/venv/bin/python", "/workspace/src/dsjob/__init__.py"]
    made = (workspace / "made-in-ml-shell").stat()
    assert (made.st_uid, made.st_gid) == (os.getuid(), os.getgid())
