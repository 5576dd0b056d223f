"""The installed package version, read from its metadata (no hard-coded duplicate)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("gpt-clf")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
