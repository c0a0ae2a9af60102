"""Subcommands of `minerva-fm` defined by this package (filled in by its owner)."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add this package's subcommands to the `minerva-fm` parser."""
