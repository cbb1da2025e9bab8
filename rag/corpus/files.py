"""Finding the files to ingest and reading text files: pure functions over paths and bytes.

What the scan does with files that are not what they seem (each skipped file is reported
with its path and the reason; the rest of the folder is ingested):

* Special files (FIFOs, sockets, character and block devices) with a text or image
  extension are skipped: reading one could block forever. Reads open files without
  blocking and check that they are regular files, so a file replaced by a FIFO after the
  scan is refused too.
* Symbolic links are followed only when they stay inside the folder being ingested (the
  file is ingested once, under its real path). A link that leads outside that folder, a
  dangling link and a link loop are skipped and reported; links to folders are never
  descended (their target, when inside, is scanned anyway). A file or link named
  explicitly on the command line is followed wherever it leads.
* Folders named like files (`photo.jpg/`) are folders: their content is scanned.
* Names are compared in Unicode NFC, so a manifest written on one system lists the files
  of another (macOS writes NFD); names with newlines or of any length are kept as they are.
* Files and folders whose names are not valid UTF-8 (bytes from another system's
  encoding) are reported, with the bad bytes shown as \\xNN, and skipped: rename them.
* Folders that cannot be listed are reported and skipped.
* Text files over MAX_TEXT_BYTES are skipped with their size; images are hashed in blocks
  (and decoded later, within the pixel limit), so memory stays bounded whatever the size.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, List, Optional, Tuple, TypeVar

from rag.corpus.manifest import MANIFEST_NAME
from rag.errors import BadInputError
from rag.media.images import IMAGE_SUFFIXES

TEXT_SUFFIXES = frozenset({".txt", ".md"})
MAX_TEXT_BYTES = 64 * 1024 * 1024  # larger text files are skipped (tens of thousands of passages)
T = TypeVar("T")
# Picture formats people expect to work but that we cannot embed: reported, not ignored.
UNSUPPORTED_IMAGE_SUFFIXES = frozenset({".svg", ".svgz", ".heic", ".heif", ".avif", ".ico", ".eps", ".psd", ".raw"})
# Byte order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


@dataclass(frozen=True)
class SourceFile:
    path: Path  # resolved
    modality: str  # "text" or "image"


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def classify(path: Path) -> Optional[str]:
    """'text', 'image', 'unsupported' (a picture we cannot read) or None (not ours: ignored)."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in UNSUPPORTED_IMAGE_SUFFIXES:
        return "unsupported"
    return None


def nfc_key(path: Path) -> str:
    """A path as a string in Unicode NFC: the key manifests and scans are matched by."""
    return unicodedata.normalize("NFC", str(path))


def special_kind(mode: int) -> Optional[str]:
    """'a FIFO (named pipe)', 'a socket', ... for a special file's mode; None for others."""
    for test, name in _SPECIAL_KINDS:
        if test(mode):
            return name
    return None


BAD_NAME = "the name is not valid UTF-8 (bytes shown as \\xNN); rename it to index it"


def shown(path: Path) -> str:
    """A path as text that can always be printed and stored (undecodable bytes as \\xNN)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _valid_name(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(folder: Path, skipped: List[Skipped]) -> Iterator[Path]:
    """Every entry below `folder` (not following links to folders), hidden ones excluded."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append(Skipped(str(folder), f"cannot list this folder ({exc.strerror or exc})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden files and folders
        path = folder / entry.name
        if not _valid_name(entry.name):
            skipped.append(Skipped(shown(path), BAD_NAME))
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(path, skipped)
        else:
            yield path


def _link_problem(path: Path, root: Optional[Path]) -> Tuple[Optional[str], bool]:
    """(why a link is not followed or None, whether it leads to a folder)."""
    try:
        target = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop; not followed", False
        return f"a broken symbolic link (its target {shown(Path(os.readlink(path)))!r} does not exist)", False
    real = Path(os.path.realpath(path))
    if root is not None and real != root and root not in real.parents:
        return f"a symbolic link leading outside {root} (to {shown(real)}); not followed", stat.S_ISDIR(target.st_mode)
    return None, stat.S_ISDIR(target.st_mode)


def scan_paths(
    paths: Iterable[Path], listed: Optional[set] = None
) -> Tuple[List[SourceFile], List[Skipped], List[str]]:
    """Walk files and folders: (files to ingest, skipped with reasons, ignored paths).

    `listed` holds the resolved paths named by manifests; inside a folder that has a
    manifest, only the files it lists are ingested (its README and the like are not).
    See the module docstring for links, special files and odd names.
    """
    found: dict[Path, SourceFile] = {}
    skipped: List[Skipped] = []
    ignored: List[str] = []
    listed_keys = {nfc_key(p) for p in (listed or set())}
    for root in paths:
        root = Path(root)
        if not _valid_name(str(root)):
            skipped.append(Skipped(shown(root), BAD_NAME))
            continue
        if not root.exists() and not root.is_symlink():
            skipped.append(Skipped(str(root), "no such file or folder"))
            continue
        explicit = not root.is_dir()
        real_root = None if explicit else root.resolve()
        candidates = [root] if explicit else list(_walk(root, skipped))
        for path in sorted(candidates):
            if path.name == MANIFEST_NAME:
                continue
            kind = classify(path)
            if path.is_symlink():
                problem, to_folder = _link_problem(path, real_root)
                if problem is not None:
                    skipped.append(Skipped(str(path), problem))
                    continue
                if to_folder:
                    continue  # a link to a folder inside: never descended, the folder is scanned anyway
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                skipped.append(Skipped(str(path), f"cannot read file ({exc.strerror or exc})"))
                continue
            special = special_kind(mode)
            if special is not None or not stat.S_ISREG(mode):
                if kind is not None or explicit:
                    what = special or "not a regular file"
                    skipped.append(Skipped(str(path), f"{what}, not a regular file; reading it could block, skipped"))
                else:
                    ignored.append(str(path))
                continue
            resolved = path.resolve()
            if not _valid_name(str(resolved)):
                skipped.append(Skipped(str(path), f"a link to {shown(resolved)}: {BAD_NAME}"))
                continue
            if not explicit and _under_manifest(path, root) and nfc_key(resolved) not in listed_keys:
                ignored.append(str(path))
                continue
            if kind == "unsupported":
                skipped.append(Skipped(str(path), f"unsupported format ({path.suffix.lower()}); convert it to PNG or JPEG"))
            elif kind is None:
                if explicit:
                    skipped.append(Skipped(str(path), f"unsupported file type {path.suffix or '(no extension)'!r}"))
                else:
                    ignored.append(str(path))
            else:
                found.setdefault(resolved, SourceFile(resolved, kind))
    return list(found.values()), skipped, ignored


def _under_manifest(path: Path, root: Path) -> bool:
    """True when a folder from `root` down to the file's folder holds a manifest."""
    folder = path.parent
    while True:
        if (folder / MANIFEST_NAME).is_file():
            return True
        if folder == root or folder == folder.parent:
            return False
        folder = folder.parent


def _read_regular(path: Path, use: Callable[[BinaryIO, int], T]) -> T:
    """`use(handle, size)` on a regular file opened without blocking; BadInputError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BadInputError(path, "vanished since the scan (no such file)") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = special_kind(info.st_mode) or "not a regular file"
            raise BadInputError(path, f"{what}, not a regular file; reading it could block, skipped")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return use(handle, info.st_size)
    except OSError as exc:
        raise BadInputError(path, f"cannot read file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def read_source_bytes(path: Path, max_bytes: Optional[int] = None) -> bytes:
    """The bytes of a regular file (at most `max_bytes`); BadInputError for special or larger files."""

    def read(handle: BinaryIO, size: int) -> bytes:
        if max_bytes is not None and size > max_bytes:
            raise BadInputError(path, f"too large ({size:,} bytes; files over {max_bytes:,} bytes are skipped)")
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:  # grew since the fstat
            raise BadInputError(path, f"too large (over {max_bytes:,} bytes; files over that are skipped)")
        return data

    return _read_regular(path, read)


def hash_source(path: Path) -> str:
    """The SHA-256 of a regular file, read in blocks (memory stays small whatever its size)."""

    def digest(handle: BinaryIO, size: int) -> str:
        hasher = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
        return hasher.hexdigest()

    return _read_regular(path, digest)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_text(data: bytes, name: str) -> str:
    """Text from UTF-8 (a BOM is allowed) or from UTF-16/32 with a BOM; BadInputError says why not."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding is not None and encoding != "utf-8":
        try:
            text = data[len(next(b for b, e in _BOMS if e == encoding)):].decode(encoding)
        except UnicodeDecodeError as exc:
            raise BadInputError(
                name, f"not valid {encoding.upper()} text although it starts with that byte order mark "
                f"(bad bytes at offset {exc.start}); re-save it as UTF-8"
            ) from None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadInputError(
                name, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); re-save it as UTF-8"
            ) from None
    if "\x00" in text:
        raise BadInputError(name, "looks like a binary file (contains NUL bytes), not text")
    if not text.strip():
        raise BadInputError(name, "empty text file")
    return text


def title_and_body(text: str, fallback: str) -> Tuple[str, str]:
    """A Markdown `# Title` first line becomes the title; otherwise the file's name does."""
    stripped = text.lstrip()
    first, _, rest = stripped.partition("\n")
    if first.startswith("# "):
        return first[2:].strip() or fallback, rest.strip() or first[2:].strip()
    return fallback, stripped.strip()
