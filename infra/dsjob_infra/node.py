"""Quiet jsii's Node end-of-life banner, which Python relays as b'...' lines on stderr."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

# jsii's runtime skips the banner when this variable lists the running Node major version.
VARIABLE = "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"


def silence_end_of_life_banner() -> None:
    """Name the Node on PATH in the variable, before jsii starts (the first aws_cdk import)."""
    node = shutil.which("node")
    if node is None or VARIABLE in os.environ:
        return
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    match = re.match(r"v(\d+)\.", version)
    if match:
        os.environ[VARIABLE] = match.group(1)
