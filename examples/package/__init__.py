"""Example helpers shipped as package.tar.gz next to script.py (see examples/README.md)."""
