"""Helpers shared by the subcommands: settings from options, JSON output, error mapping."""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

import click

from rag.config import Settings
from rag.errors import RagError


def emit_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def storage_options(func: Callable) -> Callable:
    """--storage, --text-model and --image-model, which override RAG_* variables."""
    func = click.option("--image-model", help="CLIP hub id or local folder [env RAG_IMAGE_MODEL]")(func)
    func = click.option("--text-model", help="text model hub id or local folder [env RAG_TEXT_MODEL]")(func)
    func = click.option("--storage", type=click.Path(file_okay=False),
                        help="index folder [env RAG_STORAGE, default ./storage]")(func)
    return func


def settings_from(storage: Any = None, text_model: Any = None, image_model: Any = None, **extra: Any) -> Settings:
    """Settings from the environment with the command's options on top."""
    try:
        return Settings.from_env(storage=storage, text_model=text_model, image_model=image_model, **extra)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def user_errors(func: Callable) -> Callable:
    """Show library errors as `Error: <message>` with exit status 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RagError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def stderr(message: str) -> None:
    """A line on standard error (progress and notes, never results)."""
    click.echo(message, err=True)
