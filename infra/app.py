"""CDK entry point: `cdk synth -c environment=dev`, or `python infra/app.py` (CDK_CONTEXT_JSON)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script (by the CDK CLI or make): the package sits next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dsjob_infra import build_app
from dsjob_infra.node import silence_end_of_life_banner

if __name__ == "__main__":
    silence_end_of_life_banner()
    try:
        app, _ = build_app()
    except ValueError as error:  # a bad setting: say which, without a traceback
        sys.exit(f"error: {error}")
    app.synth()
