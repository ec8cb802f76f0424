"""Where things are: the repository root and the installed `dsjob` console script."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DSJOB = Path(sys.executable).parent / "dsjob"
