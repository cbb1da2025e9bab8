"""Helpers shared by the subcommands: options, settings, the service, output and error rules.

The rules every command follows:

- usage errors (bad options, missing arguments, paths that do not exist) exit with status 2,
  other errors with 1; no traceback for either;
- with `--json`, results are one JSON object on stdout, and so are errors:
  `{"error": {"message": ..., "type": ...}}`;
- hits are labelled "passage" or "image" in human output (`modality` "text"/"image" in JSON);
- progress goes to stderr, and only when stderr is a terminal;
- models: `rag.standins.choose_models` picks them (offline stand-ins announced as `note:` lines).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import click

from rag.config import Settings
from rag.errors import RagError

LABELS = {"text": "passage", "image": "image"}  # the human word for each JSON modality
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
INTERRUPTED = "Interrupted: what was committed is kept; run the same command again to finish."


# -- errors ----------------------------------------------------------------------------------
class CommandError(click.ClickException):
    """An error with a type name for `--json` output (exit status 1)."""

    def __init__(self, message: str, kind: str = "Error") -> None:
        super().__init__(message)
        self.kind = kind


class JsonError(click.ClickException):
    """Another error shown as `{"error": {"message", "type"}}` on stdout, with its exit status."""

    def __init__(self, error: click.ClickException) -> None:
        super().__init__(error.format_message())
        self.exit_code = error.exit_code
        self.kind = error_type(error)

    def show(self, file: Any = None) -> None:
        emit_json({"error": {"message": self.message, "type": self.kind}})


def error_type(error: click.ClickException) -> str:
    """The `type` an error has in JSON: UsageError, SettingsError, or the library's error class."""
    if isinstance(error, click.UsageError):
        return "UsageError"
    return getattr(error, "kind", "Error")


def wants_json(argv: Iterable[str]) -> bool:
    """Did the command line ask for JSON (a `--json` before any `--`)?"""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


class RagGroup(click.Group):
    """The `rag` group: library errors become one-line messages, JSON ones under `--json`."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        ctx.meta["rag.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagError as exc:
            error: click.ClickException = CommandError(str(exc), type(exc).__name__)
        except JsonError:
            raise
        except click.ClickException as exc:
            error = exc
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo(INTERRUPTED, err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except OSError as exc:  # a disk or file problem the library did not foresee: name the file
            error = CommandError(describe_os_error(exc), "OSError")
        except Exception as exc:  # a bug: a short message, and the traceback saved for a report
            error = CommandError(unexpected_error(exc), "InternalError")
        if wants_json(ctx.meta.get("rag.argv", ())):
            raise JsonError(error) from None
        raise error from None


def describe_os_error(exc: OSError) -> str:
    """`<file>: <reason>` for an OSError (the file first, as every other error names it)."""
    reason = exc.strerror or str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def unexpected_error(exc: BaseException) -> str:
    """Save the traceback of an unforeseen exception to a private file; the message names it."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"rag-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path = os.path.join(tempfile.gettempdir(), name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        saved = f"the traceback is saved in {path}"
    except OSError:
        saved = "the traceback could not be saved"
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return (f"unexpected {type(exc).__name__}{': ' + first if first else ''}. This is a bug in rag; "
            f"{saved}: please attach it to a bug report.")


def user_errors(func: Callable) -> Callable:
    """Show library errors as `Error: <message>` with exit status 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RagError as exc:
            raise CommandError(str(exc), type(exc).__name__) from None

    return wrapper


# -- options and settings --------------------------------------------------------------------
def _remember_no_server(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta["rag.no_server"] = value


def storage_options(func: Callable) -> Callable:
    """--storage, --text-model and --image-model, which override RAG_* variables, and --no-server."""
    func = click.option("--no-server", is_flag=True, expose_value=False, callback=_remember_no_server,
                        help="Open the index in this process even when a `rag serve` owns it.")(func)
    func = click.option("--image-model", help="CLIP hub id or local folder [env RAG_IMAGE_MODEL]")(func)
    func = click.option("--text-model", help="text model hub id or local folder [env RAG_TEXT_MODEL]")(func)
    func = click.option("--storage", type=click.Path(file_okay=False),
                        help="index folder [env RAG_STORAGE, default ./storage]")(func)
    return func


def filter_option(func: Callable) -> Callable:
    """--filter KEY=VALUE (repeatable), parsed into a dict."""
    return click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", callback=_parse_filters,
                        help="Only hits whose metadata KEY equals VALUE (e.g. title=Moon); repeatable.")(func)


def _parse_filters(ctx: click.Context, param: click.Parameter, values: Iterable[str]) -> Dict[str, str]:
    metadata: Dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        metadata[key] = value
    return metadata


def settings_from(storage: Any = None, text_model: Any = None, image_model: Any = None, **extra: Any) -> Settings:
    """Settings from the environment with the command's options on top."""
    try:
        return Settings.from_env(storage=storage, text_model=text_model, image_model=image_model, **extra)
    except ValueError as exc:
        raise CommandError(str(exc), "SettingsError") from None


def open_service(settings: Settings) -> Any:
    """What a command works through (tests replace this function): a client of the `rag serve`
    that owns the storage, or else a `RagService` in this process (always with --no-server),
    over the models `choose_models` settles on (stand-ins when the defaults cannot load)."""
    from rag.client import running_server
    from rag.service import open_service as open_any

    context = click.get_current_context(silent=True)
    no_server = bool(context and context.meta.get("rag.no_server"))
    if not no_server and running_server(settings.storage) is not None:
        announce(choose_models(settings, probe=False).notes)  # the server chose its models
        with lean_http_imports():
            return open_any(settings)
    choice = choose_models(settings, probe=not (context and context.meta.get("rag.loads_no_model")))
    announce(choice.notes)
    return open_any(choice.settings, no_server=True, **choice.embeddings())


# Optional modules that httpx and httpcore import whenever they are installed, and no command uses.
UNUSED_HTTP_MODULES = (
    "trio",  # httpcore, in case it runs under trio (selenium, a dev dependency, installs it)
    "httpx._main",  # httpx's own command line, with rich's progress bars and pygments
)


@contextlib.contextmanager
def lean_http_imports() -> Iterator[None]:
    """While inside, the `UNUSED_HTTP_MODULES` cannot be imported (unless they already are), so
    that the client to a running server loads without them: they cost a fresh `rag search`
    through the server 0.15-0.2 s of its 0.6 s (docs/benchmarks.md). Only the command line does
    this; a library process may run httpx under trio."""
    blocked = [name for name in UNUSED_HTTP_MODULES if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def choose_models(settings: Settings, probe: bool = True) -> Any:
    """`rag.standins.choose_models`: the one place that picks offline stand-ins, for every command."""
    from rag.standins import choose_models as choose

    return choose(settings, probe=probe)


def announce(notes: Iterable[str]) -> None:
    """Notes about the models (stand-ins) as yellow `note: ...` lines on stderr."""
    for note in notes:
        click.secho(f"note: {note}", fg="yellow", err=True)


def service_from(storage: Any = None, text_model: Any = None, image_model: Any = None, **extra: Any) -> Any:
    """A `RagService` over the settings from the environment and the command's options."""
    return open_service(settings_from(storage, text_model, image_model, **extra))


# -- output ----------------------------------------------------------------------------------
def emit_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def stderr(message: str) -> None:
    """A line on standard error (progress and notes, never results)."""
    click.echo(message, err=True)


def plural(count: int, word: str, many: Optional[str] = None) -> str:
    """`1 passage`, `2 passages` (or the given plural form)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def show_progress(quiet: bool = False, as_json: bool = False) -> bool:
    """Progress bars only when asked for and stderr is a terminal (never into pipes or logs)."""
    if quiet or as_json:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


_HEADING = re.compile(r"^\s{0,3}#{1,6}(?:\s+|$)", re.MULTILINE)


def snippet(text: Optional[str], limit: int = 240) -> str:
    """A passage on one line for terminals: Markdown heading markers dropped, whitespace folded."""
    flat = " ".join(_HEADING.sub("", text or "").split())
    return flat[:limit] + ("…" if len(flat) > limit else "")


def describe_filters(filters: Dict[str, Any]) -> str:
    """`title=Moon, year=1969` as typed on the command line."""
    return ", ".join(f"{key}={value}" for key, value in filters.items())
