"""`python -m dsjob` runs the CLI."""

from dsjob.cli import main

raise SystemExit(main())
