"""Errors the library raises on purpose; the CLI prints their message as-is."""


class RagError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ModelLoadError(RagError):
    """A text or image model could not be loaded from a hub id or a local directory."""


class StorageError(RagError):
    """The index storage cannot be opened (missing, locked, or in an unknown format)."""


class BadInputError(RagError):
    """One input file cannot be used; processing goes on with the others."""
