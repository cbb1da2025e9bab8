"""Errors the library raises on purpose; the CLI prints their message as-is."""

from __future__ import annotations

from typing import Optional


class RagError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ModelLoadError(RagError):
    """A text or image model could not be loaded from a hub id or a local directory."""


class StorageError(RagError):
    """The index storage cannot be opened (missing, locked, or in an unknown format)."""


class BadInputError(RagError):
    """One input cannot be used; processing goes on with the others.

    `BadInputError(path, reason)` is about a file: the message is "<path>: <reason>" and
    `path` and `reason` stay readable on their own (ingestion reports them separately).
    `BadInputError(message)` is about an input that is no file (an option, a language
    code): `path` is None and `reason` is the whole message.
    """

    def __init__(self, path_or_message: object, reason: Optional[str] = None) -> None:
        if reason is None:
            self.path: Optional[str] = None
            self.reason = str(path_or_message)
            message = self.reason
        else:
            self.path = str(path_or_message)
            self.reason = reason
            message = f"{self.path}: {reason}"
        super().__init__(message)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.path, self.reason) if self.path is not None else (self.reason,))
