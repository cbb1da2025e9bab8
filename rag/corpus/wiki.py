"""Download Wikipedia (or any MediaWiki) articles with their pictures into a corpus folder.

`fetch_wikipedia(titles, out)` writes, under `out` (default `data/wiki/`):

    manifest.jsonl              one article record per article, one image record per image
    <Safe_Title>/article.md     "# Title", then the full plain text (sections as ## headings)
    <Safe_Title>/<File>.jpg     the article's photographs and paintings, verified

What comes from where:

* the `wikipedia` package resolves titles (redirects, missing pages, disambiguation pages
  with their candidate titles), searches for suggestions, and downloads the plain text.
  Its own HTTP call has no timeout, retries, status check or rate limit and it only knows
  http://<lang>.wikipedia.org, so while we use it its `_wiki_request` is routed through our
  `PoliteSession` and its `API_URL` points at the configured endpoint;
* direct MediaWiki API calls (same session) get what the package does not expose: the
  canonical URL, the latest revision id and page language (`prop=info`), the lead image
  (`prop=pageimages`), and image metadata (`prop=imageinfo`: thumbnail URL of bounded
  width, size, MIME type, SHA-1, licence and author from `extmetadata`).

Re-running is cheap: an article whose revision is unchanged is not downloaded again, nor is
an image whose file on disk still matches the sha256 in the manifest. The manifest is
rewritten atomically after every article from the merged state, so it never holds
duplicate records and an interrupted run loses at most the article in progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import unicodedata
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union
from urllib.parse import urljoin, urlsplit

from rag.config import Settings
from rag.corpus.http import FetchError, HttpPolicy, PoliteSession, wiki_hosts
from rag.media.images import DEFAULT_MAX_PIXELS, inspect_image_bytes
from rag.corpus.manifest import MANIFEST_NAME, parse_manifest_lines
from rag.errors import BadInputError, RagError

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
_PAGE_FAILURES = frozenset({"missing", "disambiguation", "invalid", "error"})
_FORMAT_MIMES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
_LANG = re.compile(r"^[a-z][a-z0-9]{1,11}(?:-[a-z0-9]{1,12}){0,3}$")
_WIKIPEDIA_HOST = re.compile(r"^([a-z][a-z0-9-]*)\.(?:m\.)?wikipedia\.org$")
_WIKIPEDIA_LOCK = threading.RLock()


class InvalidTitleError(RagError):
    """A title the wiki (or this fetcher) cannot accept as a page name."""


# ----------------------------------------------------------------------------- options


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
        return _check_api_url(api_url)
    if lang and settings.wiki_api_url == DEFAULT_API_URL:
        return f"https://{lang}.wikipedia.org/w/api.php"
    return _check_api_url(settings.wiki_api_url)


def check_lang(lang: str) -> str:
    """Validate a language code such as en, fr, zh-yue, be-tarask (it becomes a host name)."""
    if not _LANG.match(lang):
        raise BadInputError(
            f"language code {lang!r} is not valid: expected a Wikipedia code such as en, fr, de, zh-yue"
        )
    return lang


def _check_api_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInputError(
            f"wiki API URL {url!r} is not an http(s) URL; expected e.g. https://en.wikipedia.org/w/api.php"
        )
    return url


# ----------------------------------------------------------------------------- pure helpers

_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)
_PATH_CHARS = re.compile(r'[/\\:*?"<>|]')


def safe_name(text: str, max_bytes: int = 100, fallback: str = "untitled") -> str:
    """A file or folder name for `text` that is safe on Linux, macOS and Windows.

    No path separators, no control or format characters, no leading dots (so never `.`,
    `..` or a hidden file), no trailing dots or spaces, no reserved device names, at most
    `max_bytes` UTF-8 bytes. Spaces become underscores, as in Wikipedia URLs. Whenever the
    mapping loses information (characters replaced, name truncated) a short hash of the
    original is appended, so that "AC/DC" and "AC DC" never share a folder.
    """
    original = text
    text = unicodedata.normalize("NFC", text)
    text = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") else ch for ch in text)
    text = _PATH_CHARS.sub("_", text)
    text = re.sub(r"\s+", "_", text)
    text = re.sub(r"_{2,}", "_", text).strip("._ ")
    lossy = text != unicodedata.normalize("NFC", original).replace(" ", "_")
    if not text:
        text, lossy = fallback, True
    if text.split(".")[0].lower() in _RESERVED_NAMES:
        text, lossy = "_" + text, True
    if lossy or len(text.encode("utf-8")) > max_bytes:
        digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = text.encode("utf-8")[: max(1, max_bytes - 9)].decode("utf-8", "ignore").rstrip("._ ")
        text = f"{head or fallback}-{digest}"
    return text


def article_markdown(title: str, extract: str) -> str:
    """The article file: `# Title`, then the plain text with `== H ==` turned into `## H`.

    Sections left empty by the plain-text extract (References, External links, ...) are dropped.
    """
    lines = extract.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    pending: list[str] = []  # headings waiting for body text before they are written
    for line in lines:
        match = re.match(r"^(={2,6})\s*(.*?)\s*\1\s*$", line)
        if match:
            level = len(match.group(1))
            pending = [h for h in pending if h.count("#", 0, h.index(" ")) < level]
            pending.append("#" * level + " " + match.group(2))
            continue
        if line.strip() and pending:
            if out and out[-1].strip():
                out.append("")
            for heading in pending:
                out.extend([heading, ""])
            pending = []
        out.append(line.rstrip())
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
    heading = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in title).strip()
    return f"# {heading}\n\n{body}\n" if body else f"# {heading}\n"


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("br", "p", "li", "div"):
            self.parts.append(" ")


def html_to_text(html: Optional[str], limit: int = 0) -> str:
    """Plain text from the small HTML snippets in `extmetadata` (author links, descriptions)."""
    if not html:
        return ""
    parser = _TextOnly()
    parser.feed(str(html))
    parser.close()
    text = re.sub(r"\s+", " ", "".join(parser.parts)).strip()
    if limit and len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return text


@dataclass(frozen=True)
class ImageCandidate:
    """One file used by an article, as the API describes it (before any download)."""

    file_title: str  # "File:Batman Lee.jpg" (namespace name in the wiki's language)
    file_name: str  # "Batman Lee.jpg"
    download_url: str  # bounded-width thumbnail when the wiki offers one, else the original
    original_url: str
    description_url: str
    mime: str  # of the original
    served_mime: str  # of what `download_url` serves, as the wiki says (thumbnails of TIFF are JPEG)
    width: int
    height: int
    sha1: Optional[str]
    caption: str
    license: Optional[str]
    license_url: Optional[str]
    artist: Optional[str]
    credit: Optional[str]
    attribution: str


def _meta(extmetadata: dict[str, Any], key: str) -> Optional[str]:
    entry = extmetadata.get(key)
    value = entry.get("value") if isinstance(entry, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def parse_image_pages(pages: Sequence[dict[str, Any]], base_url: str) -> list[ImageCandidate]:
    """Turn `prop=imageinfo` pages (formatversion=2) into candidates, in the API's order."""
    candidates = []
    for page in pages:
        infos = page.get("imageinfo") or []
        if not infos or not isinstance(infos[0], dict) or not infos[0].get("url"):
            continue
        info = infos[0]
        title = str(page.get("title", ""))
        name = title.split(":", 1)[1] if ":" in title else title
        ext = info.get("extmetadata") or {}
        artist = html_to_text(_meta(ext, "Artist"), 300) or None
        credit = html_to_text(_meta(ext, "Credit"), 300) or None
        licence = html_to_text(_meta(ext, "LicenseShortName")) or None
        licence_url = _meta(ext, "LicenseUrl")
        description = html_to_text(_meta(ext, "ImageDescription"), 500)
        object_name = html_to_text(_meta(ext, "ObjectName"), 200)
        stem = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", name).replace("_", " ").strip()
        caption = description or object_name or stem
        original = urljoin(base_url, info["url"])
        description_url = urljoin(base_url, info.get("descriptionurl") or "") if info.get("descriptionurl") else ""
        attribution = ", ".join(
            x for x in (artist or "unknown author", licence or "licence unknown", description_url or original) if x
        )
        candidates.append(
            ImageCandidate(
                file_title=title,
                file_name=name,
                download_url=urljoin(base_url, info.get("thumburl") or info["url"]),
                original_url=original,
                description_url=description_url,
                mime=str(info.get("mime") or ""),
                served_mime=str((info.get("thumbmime") if info.get("thumburl") else None) or info.get("mime") or ""),
                width=int(info.get("width") or 0),
                height=int(info.get("height") or 0),
                sha1=info.get("sha1") or None,
                caption=caption,
                license=licence,
                license_url=licence_url,
                artist=artist,
                credit=credit,
                attribution=attribution,
            )
        )
    return candidates


def screen_image(candidate: ImageCandidate, options: FetchOptions) -> Optional[str]:
    """Why this image is dropped before download (None: keep it)."""
    mime = candidate.mime.lower()
    if mime == "image/svg+xml":
        return "SVG (a vector drawing, not a photograph)"
    if mime not in PHOTO_MIMES:
        return f"{mime or 'unknown type'} is not a photo format"
    match = re.search(options.skip_names, candidate.file_name, re.IGNORECASE) if options.skip_names else None
    if match:
        return f"name looks like an icon, logo or flag (matches {match.group(0)!r})"
    if candidate.width and candidate.height and min(candidate.width, candidate.height) < options.min_side:
        return f"too small ({candidate.width}x{candidate.height}; the shorter side must be >= {options.min_side} px)"
    return None


def order_images(candidates: Sequence[ImageCandidate], lead: Optional[str]) -> list[ImageCandidate]:
    """The lead image (`prop=pageimages`) first, then the others in the API's order."""
    if not lead:
        return list(candidates)
    key = lead.replace("_", " ")
    return sorted(candidates, key=lambda c: c.file_name.replace("_", " ") != key)


# ----------------------------------------------------------------------------- reports


@dataclass
class ImageReport:
    """What happened to one image: saved, present (kept from a previous run), dropped, duplicate, failed."""

    file_name: str
    status: str
    reason: Optional[str] = None
    path: Optional[str] = None  # relative to the output folder
    bytes: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ArticleReport:
    """What happened to one requested title.

    status: "fetched" (text and images), "partial" (text, but some images failed),
    "duplicate" (same page as an earlier title of this run), or a failure: "missing",
    "disambiguation" (see `candidates`), "invalid" (not a usable title), "error".
    """

    requested: str
    status: str = "error"
    title: Optional[str] = None
    url: Optional[str] = None
    page_id: Optional[int] = None
    revision_id: Optional[int] = None
    folder: Optional[str] = None
    text: Optional[str] = None  # "fetched", "unchanged" (same revision on disk) or None
    error: Optional[str] = None
    candidates: list[str] = field(default_factory=list)
    images: list[ImageReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when nothing usable was fetched for this title."""
        return self.status in _PAGE_FAILURES

    def count(self, status: str) -> int:
        return sum(1 for image in self.images if image.status == status)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["images"] = [image.to_dict() for image in self.images]
        data["failed"] = self.failed
        data["counts"] = {s: self.count(s) for s in ("saved", "present", "dropped", "duplicate", "failed")}
        return data


@dataclass
class FetchReport:
    """The outcome of one fetch: an ArticleReport per requested title."""

    out: str
    manifest: str
    api_url: str
    articles: list[ArticleReport] = field(default_factory=list)
    requests: int = 0
    started_at: str = ""
    finished_at: str = ""

    @property
    def failed(self) -> list[ArticleReport]:
        return [a for a in self.articles if a.failed]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0 when every title gave an article, 1 when at least one failed entirely."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "out": self.out,
            "manifest": self.manifest,
            "api_url": self.api_url,
            "requests": self.requests,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "articles": [a.to_dict() for a in self.articles],
            "totals": {
                "articles": len(self.articles),
                "failed": len(self.failed),
                **{
                    f"images_{s}": sum(a.count(s) for a in self.articles)
                    for s in ("saved", "present", "dropped", "duplicate", "failed")
                },
            },
        }


# ----------------------------------------------------------------------------- disk state


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> Optional[str]:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a file on disk is always complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Manifest:
    """The merged manifest state: records keyed by path, saved atomically."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / MANIFEST_NAME
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            with self.path.open(encoding="utf-8") as handle:
                try:
                    for record in parse_manifest_lines(handle, origin=str(self.path)):
                        self.records[_norm(record["path"])] = record
                except ValueError as exc:
                    raise BadInputError(f"{exc}; fix or delete that line, then fetch again") from None

    def put(self, record: dict[str, Any]) -> None:
        self.records[record["path"]] = record

    def drop(self, path: str) -> None:
        self.records.pop(path, None)

    def images_in(self, folder: str) -> dict[str, dict[str, Any]]:
        """Image records of one article folder, keyed by wiki file title."""
        prefix = folder + "/"
        return {
            str(r.get("file_title") or r.get("file_name")): r
            for p, r in self.records.items()
            if r.get("kind") == "image" and p.startswith(prefix) and ".." not in p.split("/")
        }

    def save(self) -> None:
        lines = "".join(
            json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in self.records.values()
        )
        _write_atomic(self.path, lines.encode("utf-8"))


def _norm(path: str) -> str:
    parts = [p for p in str(path).replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


# ----------------------------------------------------------------------------- the wikipedia package


@contextlib.contextmanager
def _wikipedia_via(client: PoliteSession, api_url: str, hosts: tuple[str, ...]) -> Iterator[Any]:
    """The `wikipedia` module with its HTTP routed through `client` to `api_url`.

    The package keeps its endpoint and request function in module globals, so the binding
    is held under a lock and undone afterwards; its memoised search results are cleared
    both ways (they are keyed by query only, not by endpoint).
    """
    import wikipedia.wikipedia as module

    def request(params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        params["format"] = "json"
        params.setdefault("action", "query")
        data = client.get_json(api_url, params, hosts)
        pages = (data.get("query") or {}).get("pages")
        if isinstance(pages, dict):
            for page in pages.values():
                if isinstance(page, dict) and "invalid" in page:
                    reason = page.get("invalidreason") or "the wiki rejects this title"
                    raise InvalidTitleError(f"{page.get('title', params.get('titles'))!r}: {reason}")
        return data

    with _WIKIPEDIA_LOCK:
        saved = module._wiki_request, module.API_URL
        module._wiki_request, module.API_URL = request, api_url
        for memo in (module.search, module.suggest, module.summary):
            memo.clear_cache()
        try:
            yield module
        finally:
            module._wiki_request, module.API_URL = saved
            for memo in (module.search, module.suggest, module.summary):
                memo.clear_cache()


def _check_title(title: str) -> str:
    stripped = title.strip()
    if not stripped:
        raise InvalidTitleError("empty title")
    bad = [ch for ch in stripped if unicodedata.category(ch) in ("Cc", "Cf") or ch in "|[]{}<>#"]
    if bad:
        raise InvalidTitleError(f"{title!r}: contains {''.join(dict.fromkeys(bad))!r}, which page titles cannot contain")
    if len(stripped.encode("utf-8")) > 255:
        raise InvalidTitleError(f"{title[:40]!r}...: longer than 255 bytes")
    return stripped


# ----------------------------------------------------------------------------- the fetcher


class WikiFetcher:
    """Fetch articles from one MediaWiki endpoint into one output folder."""

    def __init__(
        self,
        out: Union[str, Path] = DEFAULT_OUT,
        *,
        api_url: str = DEFAULT_API_URL,
        lang: Optional[str] = None,
        options: Optional[FetchOptions] = None,
        client: Optional[PoliteSession] = None,
        progress: Optional[bool] = None,
    ) -> None:
        self.api_url = _check_api_url(api_url)
        self.lang = check_lang(lang) if lang else None
        self.options = options or FetchOptions()
        self.client = client or PoliteSession()
        self.hosts = wiki_hosts(self.api_url, self.options.allowed_hosts)
        # Media from an https wiki must stay https; a plain-http wiki (a local one) may use both.
        self.schemes = ("https",) if urlsplit(self.api_url).scheme == "https" else ("http", "https")
        self.out = Path(out)
        self.progress = progress
        self._current: Optional[ArticleReport] = None

    # -- entry point ------------------------------------------------------------------

    def fetch(self, titles: Sequence[str]) -> FetchReport:
        from tqdm import tqdm

        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RagError(f"cannot create the output folder {self.out}: {exc.strerror}") from None
        manifest = _Manifest(self.out)
        report = FetchReport(
            out=str(self.out), manifest=str(manifest.path), api_url=self.api_url, started_at=_now()
        )
        previous_hook = self.client.on_retry
        self.client.on_retry = self._note
        sent_before = self.client.requests_sent
        seen: dict[str, str] = {}  # page id -> first requested title
        disable = None if self.progress is None else not self.progress
        try:
            with _wikipedia_via(self.client, self.api_url, self.hosts) as wikipedia:
                bar = tqdm(titles, desc="articles", unit="article", disable=disable, leave=False)
                for requested in bar:
                    article = ArticleReport(requested=requested)
                    self._current = article
                    report.articles.append(article)
                    bar.set_postfix_str(requested[:30])
                    try:
                        self._fetch_one(wikipedia, article, manifest, seen, disable)
                    except InvalidTitleError as exc:
                        article.status, article.error = "invalid", str(exc)
                    except FetchError as exc:
                        article.status, article.error = "error", str(exc)
                    except OSError as exc:
                        article.status, article.error = "error", f"cannot write under {self.out}: {exc}"
                    except RagError as exc:
                        article.status, article.error = "error", str(exc)
                    finally:
                        manifest.save()
                bar.close()
        finally:
            self.client.on_retry = previous_hook
            self._current = None
            report.requests = self.client.requests_sent - sent_before
            report.finished_at = _now()
        return report

    def _note(self, message: str) -> None:
        if self._current is not None:
            self._current.notes.append(message)

    # -- one article ------------------------------------------------------------------

    def _fetch_one(self, wikipedia: Any, article: ArticleReport, manifest: _Manifest, seen: dict[str, str], disable: Optional[bool]) -> None:
        from wikipedia.exceptions import DisambiguationError, PageError, WikipediaException

        title = _check_title(article.requested)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*parser.*")  # bs4 guessing a parser
                page = wikipedia.page(title, auto_suggest=False, redirect=True)
        except DisambiguationError as exc:
            article.status = "disambiguation"
            article.title = exc.title
            article.candidates = [str(o) for o in exc.options]
            article.error = f"{exc.title!r} is a disambiguation page; pick one of the candidates"
            return
        except PageError:
            article.status = "missing"
            article.error = f"no page titled {title!r} on {self.api_url}"
            article.candidates = self._suggest(wikipedia, title)
            if article.candidates:
                article.error += "; did you mean one of the candidates?"
            return
        except WikipediaException as exc:
            article.status, article.error = "error", f"wikipedia package: {exc}"
            return
        except (KeyError, IndexError, TypeError, AssertionError) as exc:
            article.status = "error"
            article.error = f"unexpected API answer while resolving {title!r} ({type(exc).__name__}: {exc})"
            return

        page_id = str(page.pageid)
        article.title = page.title
        if page_id in seen:
            article.status = "duplicate"
            article.error = None
            article.notes.append(f"same page as {seen[page_id]!r}, fetched once")
            article.page_id = int(page_id) if page_id.isdigit() else None
            return
        seen[page_id] = article.requested
        info = self._page_info(page_id)
        article.page_id = int(page_id) if page_id.isdigit() else None
        article.url = info.get("canonicalurl") or info.get("fullurl") or page.url
        lang = self.lang or info.get("pagelanguage") or _lang_from_host(self.api_url)

        folder = self._folder_for(page.title)
        folder_rel = folder.relative_to(self.out).as_posix()
        article.folder = folder_rel
        text_rel = f"{folder_rel}/{ARTICLE_FILE}"
        text_path = self.out / text_rel

        old = manifest.records.get(text_rel)
        latest = info.get("lastrevid")
        if (
            old is not None
            and latest is not None
            and old.get("revision_id") == latest
            and old.get("sha256")
            and _file_sha256(text_path) == old.get("sha256")
        ):
            article.text = "unchanged"
            article.revision_id = latest
            record = dict(old)
        else:
            try:
                content = page.content
                revision = page.revision_id
            except KeyError as exc:
                raise FetchError(
                    f"{self.api_url} gave no plain text for {page.title!r} (missing {exc}); "
                    "the wiki needs the TextExtracts extension"
                ) from None
            data = article_markdown(page.title, content or "").encode("utf-8")
            folder.mkdir(exist_ok=True)
            _write_atomic(text_path, data)
            article.text = "fetched"
            article.revision_id = int(revision) if revision is not None else latest
            record = {
                "kind": "article",
                "path": text_rel,
                "source": "wikipedia",
                "api_url": self.api_url,
                "fetched_at": _now(),
                "sha256": _sha256(data),
                "bytes": len(data),
            }
        record.update(
            title=page.title, url=article.url, page_id=article.page_id, revision_id=article.revision_id, lang=lang
        )
        manifest.put(record)

        if self.options.max_images > 0:
            self._fetch_images(article, page_id, info.get("pageimage"), folder, manifest, lang, disable)
        article.status = "partial" if article.count("failed") else "fetched"

    def _suggest(self, wikipedia: Any, title: str) -> list[str]:
        from wikipedia.exceptions import WikipediaException

        if self.options.search_suggestions <= 0:
            return []
        try:
            results, suggestion = wikipedia.search(title, results=self.options.search_suggestions, suggestion=True)
        except (FetchError, WikipediaException, KeyError, TypeError) as exc:
            self._note(f"search for suggestions failed: {exc}")
            return []
        return list(dict.fromkeys(([suggestion] if suggestion else []) + list(results)))

    def _page_info(self, page_id: str) -> dict[str, Any]:
        data = self.client.get_json(
            self.api_url,
            {
                "action": "query",
                "format": "json",
                "formatversion": "2",
                "pageids": page_id,
                "prop": "info|pageimages",
                "inprop": "url",
                "piprop": "name",
            },
            self.hosts,
        )
        pages = (data.get("query") or {}).get("pages") or []
        return pages[0] if pages and isinstance(pages[0], dict) else {}

    def _folder_for(self, title: str) -> Path:
        name = safe_name(title)
        folder = self.out / name
        marker = folder / ARTICLE_FILE
        if marker.is_file():
            with marker.open(encoding="utf-8", errors="replace") as handle:
                first = handle.readline().rstrip("\n")
            if first != article_markdown(title, "").rstrip("\n"):  # another title maps here (e.g. a case-insensitive disk)
                folder = self.out / f"{name}-{hashlib.sha256(title.encode()).hexdigest()[:8]}"
        if folder.is_symlink() or folder.resolve().parent != self.out.resolve():
            raise RagError(f"{title!r}: refusing to write into {folder}: it is a link or leaves {self.out}")
        return folder

    # -- images -----------------------------------------------------------------------

    def _image_candidates(self, page_id: str, lang: Optional[str]) -> list[ImageCandidate]:
        params: dict[str, Any] = {
            "action": "query",
            "format": "json",
            "formatversion": "2",
            "pageids": page_id,
            "generator": "images",
            "gimlimit": "50",
            "prop": "imageinfo",
            "iiprop": "url|size|mime|sha1|extmetadata",
            "iiurlwidth": str(self.options.thumb_width),
            "iiextmetadatafilter": "ImageDescription|ObjectName|Artist|Credit|LicenseShortName|LicenseUrl",
        }
        if lang:
            params["iiextmetadatalanguage"] = lang
        merged: dict[str, dict[str, Any]] = {}
        cont: dict[str, Any] = {}
        for _ in range(20):  # at most 20 batches of 50 files
            data = self.client.get_json(self.api_url, {**params, **cont}, self.hosts)
            for page in (data.get("query") or {}).get("pages") or []:
                if isinstance(page, dict) and page.get("title"):
                    known = merged.setdefault(page["title"], page)
                    if "imageinfo" in page and "imageinfo" not in known:
                        known["imageinfo"] = page["imageinfo"]
            cont = data.get("continue") or {}
            if not cont:
                break
        return parse_image_pages(list(merged.values()), self.api_url)

    def _fetch_images(
        self,
        article: ArticleReport,
        page_id: str,
        lead: Optional[str],
        folder: Path,
        manifest: _Manifest,
        lang: Optional[str],
        disable: Optional[bool],
    ) -> None:
        from tqdm import tqdm

        folder_rel = folder.relative_to(self.out).as_posix()
        candidates = order_images(self._image_candidates(page_id, lang), lead)
        previous = manifest.images_in(folder_rel)
        # What is already on disk, by content hash, by the wiki's SHA-1 and by file title
        # (including the titles found to be byte-identical copies: `also_as`).
        by_sha256: dict[str, str] = {}
        by_sha1: dict[str, str] = {}
        by_title: dict[str, str] = {}
        for path, record in manifest.records.items():
            if record.get("kind") == "image" and (self.out / path).is_file():
                if record.get("sha256"):
                    by_sha256.setdefault(record["sha256"], path)
                if record.get("source_sha1"):
                    by_sha1.setdefault(record["source_sha1"], path)
                for known in [record.get("file_title"), *record.get("also_as", [])]:
                    if known:
                        by_title.setdefault(str(known), path)
        kept = 0
        bar = tqdm(candidates, desc=(article.title or "")[:24], unit="image", disable=disable, leave=False)
        for candidate in bar:
            if kept >= self.options.max_images:
                break
            reason = screen_image(candidate, self.options)
            if reason:
                article.images.append(ImageReport(candidate.file_name, "dropped", reason))
                continue
            old = previous.get(candidate.file_title)
            if old is not None:
                old_path = self.out / old["path"]
                unchanged_upstream = not (candidate.sha1 and old.get("source_sha1") and candidate.sha1 != old["source_sha1"])
                if unchanged_upstream and _file_sha256(old_path) == old.get("sha256"):
                    kept += 1
                    article.images.append(ImageReport(candidate.file_name, "present", None, old["path"], old.get("bytes")))
                    continue
            same = by_title.get(candidate.file_title) if old is None else None
            if same is None and candidate.sha1 and candidate.sha1 in by_sha1:
                same = by_sha1[candidate.sha1]
            if same is not None and (old is None or same != old["path"]):
                article.images.append(ImageReport(candidate.file_name, "duplicate", f"same file as {same}"))
                continue
            try:
                record = self._download_image(candidate, article, folder, manifest, by_sha256, lang)
            except (FetchError, BadInputError) as exc:
                article.images.append(ImageReport(candidate.file_name, "failed", str(exc)))
                continue
            except OSError as exc:
                article.images.append(ImageReport(candidate.file_name, "failed", f"cannot write: {exc}"))
                continue
            if record is None:
                continue
            by_title[candidate.file_title] = record["path"]
            if old is not None and old["path"] != record["path"]:  # replaced by a newer upload
                manifest.drop(old["path"])
                stale = self.out / old["path"]
                if stale.resolve().parent == folder.resolve():
                    stale.unlink(missing_ok=True)
            manifest.put(record)
            by_sha256[record["sha256"]] = record["path"]
            if candidate.sha1:
                by_sha1[candidate.sha1] = record["path"]
            kept += 1
            article.images.append(ImageReport(candidate.file_name, "saved", None, record["path"], record["bytes"]))
        bar.close()

    def _download_image(
        self,
        candidate: ImageCandidate,
        article: ArticleReport,
        folder: Path,
        manifest: _Manifest,
        by_sha256: dict[str, str],
        lang: Optional[str],
    ) -> Optional[dict[str, Any]]:
        download = self.client.download(
            candidate.download_url, self.hosts, max_bytes=self.options.max_bytes, schemes=self.schemes
        )
        data = download.content
        info = inspect_image_bytes(data, candidate.file_name, self.options.max_pixels)
        if min(info.width, info.height) < self.options.min_side:
            article.images.append(
                ImageReport(candidate.file_name, "dropped", f"too small once downloaded ({info.width}x{info.height})")
            )
            return None
        digest = _sha256(data)
        if digest in by_sha256:
            kept = manifest.records.get(by_sha256[digest])
            if kept is not None:  # remember the copy's title: a later run skips it without a download
                kept["also_as"] = sorted({*kept.get("also_as", []), candidate.file_title})
            article.images.append(ImageReport(candidate.file_name, "duplicate", f"same bytes as {by_sha256[digest]}"))
            return None
        stem = safe_name(re.sub(r"\.[A-Za-z0-9]{2,5}$", "", candidate.file_name), max_bytes=100, fallback="image")
        folder_rel = folder.relative_to(self.out).as_posix()
        rel = f"{folder_rel}/{stem}{info.extension}"
        taken = manifest.records.get(rel)
        if rel == f"{folder_rel}/{ARTICLE_FILE}" or (taken is not None and taken.get("file_title") != candidate.file_title):
            rel = f"{folder_rel}/{stem}-{hashlib.sha256(candidate.file_title.encode()).hexdigest()[:8]}{info.extension}"
        folder.mkdir(exist_ok=True)
        _write_atomic(self.out / rel, data)
        real_mime = _FORMAT_MIMES.get(info.format, candidate.served_mime)
        if candidate.served_mime and real_mime != candidate.served_mime:
            article.notes.append(
                f"{candidate.file_name}: the wiki says {candidate.served_mime}, the bytes are {info.format}; "
                f"saved as {rel}"
            )
        return {
            "kind": "image",
            "path": rel,
            "title": article.title,
            "url": article.url,
            "article_path": f"{folder_rel}/{ARTICLE_FILE}",
            "page_id": article.page_id,
            "lang": lang,
            "caption": candidate.caption,
            "file_name": candidate.file_name,
            "file_title": candidate.file_title,
            "source_url": download.final_url,
            "original_url": candidate.original_url,
            "description_url": candidate.description_url,
            "source_sha1": candidate.sha1,
            "sha256": digest,
            "bytes": len(data),
            "width": info.width,
            "height": info.height,
            "mime": real_mime,
            "license": candidate.license,
            "license_url": candidate.license_url,
            "artist": candidate.artist,
            "credit": candidate.credit,
            "attribution": candidate.attribution,
            "fetched_at": _now(),
        }


def _lang_from_host(api_url: str) -> Optional[str]:
    match = _WIKIPEDIA_HOST.match((urlsplit(api_url).hostname or "").lower())
    return match.group(1) if match else None


def fetch_wikipedia(
    titles: Sequence[str],
    out: Union[str, Path] = DEFAULT_OUT,
    *,
    settings: Optional[Settings] = None,
    api_url: Optional[str] = None,
    lang: Optional[str] = None,
    options: Optional[FetchOptions] = None,
    policy: Optional[HttpPolicy] = None,
    client: Optional[PoliteSession] = None,
    contact: Optional[str] = None,
    progress: Optional[bool] = None,
) -> FetchReport:
    """Download `titles` with their images into `out`; return what happened to each.

    The endpoint is `api_url`, else https://<lang>.wikipedia.org/w/api.php when `lang` is
    given and the settings hold the default endpoint, else `settings.wiki_api_url`
    (env RAG_WIKI_API_URL). `progress`: None shows bars when stderr is a terminal.
    Per-title problems are reported, not raised; RagError only for a bad endpoint, a bad
    language code, an unwritable output folder or a corrupt manifest.
    """
    settings = settings or Settings.from_env()
    endpoint = resolve_api_url(settings, api_url, lang)
    if options is None:
        options = FetchOptions(max_pixels=settings.max_image_pixels)
    own_client = client is None
    client = client or PoliteSession(policy, contact=contact)
    try:
        return WikiFetcher(out, api_url=endpoint, lang=lang, options=options, client=client, progress=progress).fetch(
            list(titles)
        )
    finally:
        if own_client:
            client.close()
