"""Helpers shared by the subcommands: settings from options, JSON output, error mapping."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from rag.errors import RagError


def emit_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def fail(exc: RagError) -> "click.ClickException":
    """Turn a library error into the CLI error whose text the user sees."""
    return click.ClickException(str(exc))


def stderr(message: str) -> None:
    click.echo(message, err=True)
    sys.stderr.flush()
