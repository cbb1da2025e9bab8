"""What to fetch and from where: fetch options, the endpoint, language codes and titles."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from rag.config import Settings
from rag.errors import BadInputError, RagError
from rag.media.images import DEFAULT_MAX_PIXELS

DEFAULT_OUT = Path("data/wiki")
ARTICLE_FILE = "article.md"
DEFAULT_API_URL = Settings.wiki_api_url
# MIME types (as the API reports them for the original file) that may hold photographs or paintings.
PHOTO_MIMES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff"})
# File names that are almost always decoration rather than content.
DEFAULT_SKIP_NAMES = (
    r"icon|logo|flag|symbol|emblem|coat[ _-]?of[ _-]?arms|seal[ _(]|signature|wordmark|"
    r"commons-logo|wiki[a-z]*[ _-]?logo|question[ _]book|ambox|padlock|edit-clear|"
    r"disambig|stub|portal|crystal[ _]clear|nuvola|oojs|red[ _]pencil|increase|decrease|steady"
)
_LANG = re.compile(r"^[a-z][a-z0-9]{1,11}(?:-[a-z0-9]{1,12}){0,3}$")
_WIKIPEDIA_HOST = re.compile(r"^([a-z][a-z0-9-]*)\.(?:m\.)?wikipedia\.org$")


class InvalidTitleError(RagError):
    """A title the wiki (or this fetcher) cannot accept as a page name."""


@dataclass(frozen=True)
class FetchOptions:
    """What to keep and how much to download; every limit is per image unless noted."""

    max_images: int = 20  # images kept per article (already present ones count); 0: text only
    thumb_width: int = 1280  # ask the wiki for a thumbnail this wide instead of a huge original
    min_side: int = 100  # drop images whose shorter side is below this (icons, bullets)
    max_bytes: int = 20 * 1024 * 1024  # abandon a download past this many bytes
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse decoded images larger than this
    skip_names: str = DEFAULT_SKIP_NAMES  # regex (case-insensitive) on the file name
    allowed_hosts: tuple[str, ...] = ()  # hosts besides the API host (and upload.wikimedia.org)
    search_suggestions: int = 5  # candidates offered for a missing title (0: no search)


def resolve_api_url(settings: Optional[Settings] = None, api_url: Optional[str] = None, lang: Optional[str] = None) -> str:
    """The api.php endpoint to use: `api_url`, else <lang>.wikipedia.org, else the settings'.

    `lang` only switches the host while no custom endpoint is configured (the settings still
    hold the default English endpoint).
    """
    settings = settings or Settings()
    if lang is not None:
        check_lang(lang)
    if api_url:
        return check_api_url(api_url)
    if lang and settings.wiki_api_url == DEFAULT_API_URL:
        return f"https://{lang}.wikipedia.org/w/api.php"
    return check_api_url(settings.wiki_api_url)


def check_lang(lang: str) -> str:
    """Validate a language code such as en, fr, zh-yue, be-tarask (it becomes a host name)."""
    if not _LANG.match(lang):
        raise BadInputError(
            f"language code {lang!r} is not valid: expected a Wikipedia code such as en, fr, de, zh-yue"
        )
    return lang


def check_api_url(url: str) -> str:
    """Return `url` when it is an absolute http(s) URL; BadInputError otherwise."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        valid = False
    if not valid:
        raise BadInputError(
            f"wiki API URL {url!r} is not an http(s) URL; expected e.g. https://en.wikipedia.org/w/api.php"
        )
    return url


def lang_from_host(api_url: str) -> Optional[str]:
    """The language of a Wikipedia endpoint from its host name (None for other wikis)."""
    match = _WIKIPEDIA_HOST.match((urlsplit(api_url).hostname or "").lower())
    return match.group(1) if match else None


def check_title(title: str) -> str:
    """The title stripped, or InvalidTitleError for one no wiki accepts (checked before asking)."""
    stripped = title.strip()
    if not stripped:
        raise InvalidTitleError("empty title")
    bad = [ch for ch in stripped if unicodedata.category(ch) in ("Cc", "Cf") or ch in "|[]{}<>#"]
    if bad:
        raise InvalidTitleError(f"{title!r}: contains {''.join(dict.fromkeys(bad))!r}, which page titles cannot contain")
    if len(stripped.encode("utf-8")) > 255:
        raise InvalidTitleError(f"{title[:40]!r}...: longer than 255 bytes")
    return stripped
