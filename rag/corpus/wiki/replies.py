"""Pure parsing of MediaWiki API replies: what each request asks and what its answer means.

Wikis answer in two shapes. With `formatversion=2` (MediaWiki 1.25 and later, which we
ask for) `query.pages` is a list and flags are booleans; older wikis, and wikis that ignore
the parameter, send `query.pages` as an object keyed by page id with flags as empty
strings. `pages_of` turns both into a list, so every parser below reads either shape.
Answers that lack what a request needs raise `UnexpectedAnswer` naming the URL and title.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Optional

from rag.corpus.http import FetchError

MAX_SUGGESTIONS = 50


class UnexpectedAnswer(FetchError):
    """The API answered, but without what the request needs (missing keys, wrong types)."""


def pages_of(data: Any) -> list[dict[str, Any]]:
    """`query.pages` as a list of page objects, whichever of the two shapes the wiki sent."""
    query = data.get("query") if isinstance(data, dict) else None
    pages = query.get("pages") if isinstance(query, dict) else None
    if isinstance(pages, dict):
        pages = list(pages.values())
    if not isinstance(pages, list):
        return []
    return [page for page in pages if isinstance(page, dict)]


def flag(page: dict[str, Any], name: str) -> bool:
    """A page flag: `"missing": ""` (old shape) or `"missing": true` (formatversion=2)."""
    return name in page and page[name] is not False and page[name] is not None


def _text(page: dict[str, Any], key: str) -> Optional[str]:
    """A non-empty string field of a page object, else None."""
    value = page.get(key)
    return value if isinstance(value, str) and value.strip() else None


def page_id_of(page: dict[str, Any]) -> Optional[int]:
    """The positive page id of a page object, or None."""
    value = page.get("pageid")
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def page_with_id(data: Any, page_id: int) -> Optional[dict[str, Any]]:
    """The page object with this id, else the only page of the answer, else None."""
    pages = pages_of(data)
    for page in pages:
        if page_id_of(page) == page_id:
            return page
    return pages[0] if len(pages) == 1 else None


def _query(**params: Any) -> dict[str, Any]:
    return {"action": "query", "format": "json", "formatversion": "2", **params}


# ----------------------------------------------------------------------------- resolving a title


@dataclass(frozen=True)
class Resolution:
    """What a title is on the wiki.

    status: "page", "missing", "invalid" (the wiki rejects the title), "disambiguation",
    or "unresolved" (a redirect the wiki did not follow: a loop or a broken chain).
    """

    status: str
    title: str
    page_id: Optional[int] = None
    url: Optional[str] = None
    reason: Optional[str] = None


def resolve_params(title: str) -> dict[str, Any]:
    """Resolve a title: follow redirects, say whether it is missing or a disambiguation page."""
    return _query(titles=title, prop="info|pageprops", inprop="url", ppprop="disambiguation", redirects="1")


def _redirect_loop(data: dict[str, Any]) -> Optional[str]:
    hops = (data.get("query") or {}).get("redirects") if isinstance(data.get("query"), dict) else None
    if not isinstance(hops, list):
        return None
    chain: list[str] = []
    for hop in hops:
        if not isinstance(hop, dict):
            continue
        source, target = str(hop.get("from", "")), str(hop.get("to", ""))
        if not chain:
            chain.append(source)
        chain.append(target)
        if target in chain[:-1]:
            return " -> ".join(chain)
    return None


def parse_resolution(data: Any, requested: str, url: str) -> Resolution:
    """Read the answer to `resolve_params(requested)`."""
    pages = pages_of(data)
    if not pages:
        raise UnexpectedAnswer(f"{url}: the answer for {requested!r} holds no page (expected query.pages)")
    page = pages[0]
    title = str(page.get("title") or requested)
    if flag(page, "invalid"):
        reason = str(page.get("invalidreason") or "the wiki rejects this title")
        return Resolution("invalid", title, reason=f"{title!r}: {reason}")
    if flag(page, "missing"):
        return Resolution("missing", title)
    page_id = page_id_of(page)
    if page_id is None:
        raise UnexpectedAnswer(f"{url}: the answer for {requested!r} has no page id")
    loop = _redirect_loop(data)
    if loop or flag(page, "redirect"):
        why = f"redirect loop: {loop}" if loop else f"{title!r} is a redirect the wiki did not follow (a loop or a broken chain)"
        return Resolution("unresolved", title, page_id, reason=why)
    props = page.get("pageprops")
    if isinstance(props, dict) and "disambiguation" in props:
        return Resolution("disambiguation", title, page_id)
    return Resolution("page", title, page_id, url=_text(page, "canonicalurl") or _text(page, "fullurl"))


# ----------------------------------------------------------------------------- disambiguation pages


def disambiguation_params(title: str) -> dict[str, Any]:
    """The rendered HTML of a disambiguation page (its list items are the candidates)."""
    return _query(titles=title, prop="revisions", rvprop="content", rvparse="1", rvlimit="1")


class _ListLinks(HTMLParser):
    """The text of the first link inside each list item (table-of-contents items excluded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[Optional[str]] = []  # one slot per <li>, in document order
        self.open: list[int] = []  # slots of the <li> elements we are inside
        self.capturing: list[int] = []  # slots whose first link we are reading
        self.parts: dict[int, list[str]] = {}
        self.skip: set[int] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag == "li":
            slot = len(self.items)
            self.items.append(None)
            self.open.append(slot)
            if "tocsection" in (dict(attrs).get("class") or ""):
                self.skip.add(slot)
        elif tag == "a":
            self.capturing = [s for s in self.open if s not in self.parts]
            for slot in self.capturing:
                self.parts[slot] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            for slot in self.capturing:
                self.items[slot] = "".join(self.parts[slot]).strip()
            self.capturing = []
        elif tag == "li" and self.open:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        for slot in self.capturing:
            self.parts[slot].append(data)


def parse_disambiguation(data: Any) -> list[str]:
    """Candidate titles from the answer to `disambiguation_params` (empty when there are none)."""
    pages = pages_of(data)
    revisions = pages[0].get("revisions") if pages else None
    revision = revisions[0] if isinstance(revisions, list) and revisions and isinstance(revisions[0], dict) else {}
    slot = (revision.get("slots") or {}).get("main") if isinstance(revision.get("slots"), dict) else None
    source = slot if isinstance(slot, dict) else revision
    html = source.get("*") if "*" in source else source.get("content")
    if not isinstance(html, str):
        return []
    parser = _ListLinks()
    parser.feed(html)
    parser.close()
    return [text for slot, text in enumerate(parser.items) if text and slot not in parser.skip]


# ----------------------------------------------------------------------------- text, info, search


def content_params(title: str) -> dict[str, Any]:
    """The plain text of a page (TextExtracts) and its revision id."""
    return _query(titles=title, prop="extracts|revisions", explaintext="1", rvprop="ids")


def parse_content(data: Any, page_id: int, title: str, url: str) -> tuple[str, Optional[int]]:
    """(plain text, revision id) from the answer to `content_params`."""
    page = page_with_id(data, page_id)
    if page is None:
        raise UnexpectedAnswer(f"{url}: the text answer for {title!r} holds no page {page_id}")
    extract = page.get("extract")
    if not isinstance(extract, str):
        raise UnexpectedAnswer(
            f"{url} gave no plain text for {title!r} (missing 'extract'); the wiki needs the TextExtracts extension"
        )
    revisions = page.get("revisions")
    revision = revisions[0] if isinstance(revisions, list) and revisions and isinstance(revisions[0], dict) else {}
    revid = revision.get("revid")
    return extract, revid if isinstance(revid, int) and not isinstance(revid, bool) else None


def info_params(page_id: int) -> dict[str, Any]:
    """Canonical URL, latest revision, language and lead image of a page."""
    return _query(pageids=str(page_id), prop="info|pageimages", inprop="url", piprop="name")


@dataclass(frozen=True)
class PageInfo:
    """What `info_params` tells about a page; None for whatever the answer lacks."""

    url: Optional[str] = None  # canonical URL, else the full URL
    lang: Optional[str] = None
    latest_revision: Optional[int] = None
    lead_image: Optional[str] = None  # file name, without namespace


def parse_info(data: Any, page_id: int) -> PageInfo:
    """Read the answer to `info_params`; fields of the wrong type count as absent."""
    page = page_with_id(data, page_id) or {}
    revision = page.get("lastrevid")
    return PageInfo(
        url=_text(page, "canonicalurl") or _text(page, "fullurl"),
        lang=_text(page, "pagelanguage"),
        latest_revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else None,
        lead_image=_text(page, "pageimage"),
    )


def search_params(text: str, limit: int) -> dict[str, Any]:
    """Full-text search with the wiki's spelling suggestion."""
    return _query(list="search", srsearch=text, srlimit=str(limit), srprop="", srinfo="suggestion")


def parse_search(data: Any) -> list[str]:
    """The suggestion (if any), then the result titles, without repeats."""
    query = data.get("query") if isinstance(data, dict) else None
    if not isinstance(query, dict):
        return []
    info = query.get("searchinfo")
    suggestion = info.get("suggestion") if isinstance(info, dict) else None
    results = query.get("search")
    titles = [r.get("title") for r in results if isinstance(r, dict)] if isinstance(results, list) else []
    found = [str(t) for t in [suggestion, *titles] if isinstance(t, str) and t.strip()]
    return list(dict.fromkeys(found))[:MAX_SUGGESTIONS]
