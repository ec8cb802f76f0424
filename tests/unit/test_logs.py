"""Logging set-up: the format choice."""

from __future__ import annotations

import pytest

from dsjob.errors import ConfigError, ExitCode
from dsjob.logs import json_choice

pytestmark = pytest.mark.unit


def test_format_choices() -> None:
    """The value `auto` decides by TTY (None); json and text force the format, in any case."""
    assert json_choice(None) is None
    assert json_choice("auto") is None
    assert json_choice("JSON") is True
    assert json_choice("text") is False


def test_misspelt_format_is_a_config_error() -> None:
    """`jsno` is refused (exit 2) naming the variable, never a silent fallback to text."""
    with pytest.raises(ConfigError) as info:
        json_choice("jsno")
    assert info.value.exit_code == ExitCode.CONFIG
    assert "DSJOB_LOG_FORMAT must be one of auto, json, text, got 'jsno'" in str(info.value)
