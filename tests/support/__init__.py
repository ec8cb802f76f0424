"""Shared test helpers, one small module per concern.

paths, ports, credentials, emulator, skips, versions (config/versions.conf).
"""
