"""Logging set-up: JSON lines off a TTY (CloudWatch), readable text on one."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from dsjob.errors import ConfigError

FORMATS = ("auto", "json", "text")
# Attributes every LogRecord has; anything else was passed in `extra=` and is logged.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single JSON line."""
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Short human lines for a terminal: `12:00:01 info  message  key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as one readable line."""
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def json_choice(value: str | None, *, source: str = "DSJOB_LOG_FORMAT") -> bool | None:
    """`auto` -> None (decide by TTY), `json` -> True, `text` -> False; anything else fails.

    A misspelt format (`jsno`) must not fall back silently to text: CloudWatch metric
    filters that parse JSON lines would then match nothing.

    Args:
        value: the requested format (None or empty: auto).
        source: where the value came from, named in the error.
    """
    choice = (value or "auto").strip().lower()
    if choice not in FORMATS:
        msg = f"{source} must be one of {', '.join(FORMATS)}, got {value!r}"
        raise ConfigError(msg)
    return None if choice == "auto" else choice == "json"


def json_mode() -> bool:
    """Whether the configured root handler writes JSON lines (as `configure` chose)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def ensure_configured() -> bool:
    """Configure logging from DSJOB_LOG_FORMAT unless a command already did; True for JSON.

    A usage error is raised before any command configures logging, yet its report must
    follow the same format as a run's (JSON lines off a TTY). A misspelt value counts as
    `auto` here: the usage error is what gets reported.
    """
    if logging.getLogger().handlers:
        return json_mode()
    try:
        choice = json_choice(os.environ.get("DSJOB_LOG_FORMAT"))
    except ConfigError:
        choice = None
    return configure(json_lines=choice)


def configure(
    *, verbose: bool = False, stream: TextIO | None = None, json_lines: bool | None = None
) -> bool:
    """Configure the root logger once, from the CLI.

    Args:
        verbose: log at DEBUG instead of INFO.
        stream: where logs go (default stderr).
        json_lines: force JSON (True) or text (False); default: JSON unless `stream` is a TTY.

    Returns:
        Whether JSON lines were chosen (progress bars are shown only in text mode).
    """
    out = stream if stream is not None else sys.stderr
    use_json = not out.isatty() if json_lines is None else json_lines
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Third-party chatter (botocore, urllib3, werkzeug) stays out of the job log.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return use_json
