"""The lambda image's lock keeps every prod pin, so its layer adds only the runtime client."""

from __future__ import annotations

import re

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.unit

# One requirement of a uv lock: the pin line, its hashes, up to the next pin.
_ENTRY = re.compile(r"^(\S+==\S+(?: ;[^\\\n]*)?) \\\n((?:\s+--hash=\S+(?: \\)?\n)+)", re.MULTILINE)


def _pins(name: str) -> dict[str, set[str]]:
    text = (REPO / name).read_text(encoding="utf-8")
    return {
        pin.strip(): set(re.findall(r"--hash=(\S+)", hashes))
        for pin, hashes in _ENTRY.findall(text)
    }


def test_lambda_lock_holds_each_prod_pin_with_its_hashes() -> None:
    """Every requirements.lock pin is in requirements-lambda.lock, same version and hashes.

    The lambda stage installs its lock over the prod venv; a differing pin would install a
    second copy of that package in the lambda layer (duckdb alone is 69 MB).
    """
    prod = _pins("requirements.lock")
    lambda_ = _pins("requirements-lambda.lock")
    assert len(prod) > 10
    assert {pin: lambda_.get(pin) for pin in prod} == prod
    assert any(pin.startswith("awslambdaric==") for pin in lambda_)
