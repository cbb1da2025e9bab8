"""The images of an article as the API lists them: parsing, screening and ordering (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence
from urllib.parse import urljoin

from rag.corpus.wiki.options import PHOTO_MIMES, FetchOptions
from rag.corpus.wiki.replies import pages_of
from rag.corpus.wiki.text import html_to_text

EXTMETADATA_FIELDS = "ImageDescription|ObjectName|Artist|Credit|LicenseShortName|LicenseUrl"


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


def images_params(page_id: int, thumb_width: int, lang: Optional[str]) -> dict[str, Any]:
    """The files a page uses, with URLs, sizes, MIME types, SHA-1 and licence metadata."""
    params: dict[str, Any] = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "pageids": str(page_id),
        "generator": "images",
        "gimlimit": "50",
        "prop": "imageinfo",
        "iiprop": "url|size|mime|sha1|extmetadata",
        "iiurlwidth": str(thumb_width),
        "iiextmetadatafilter": EXTMETADATA_FIELDS,
    }
    if lang:
        params["iiextmetadatalanguage"] = lang
    return params


def merge_image_batch(merged: dict[str, dict[str, Any]], data: Any) -> dict[str, Any]:
    """Add one batch of `images_params` pages to `merged` (by file title); return its `continue`."""
    for page in pages_of(data):
        title = page.get("title")
        if isinstance(title, str) and title:
            known = merged.setdefault(title, page)
            if "imageinfo" in page and "imageinfo" not in known:
                known["imageinfo"] = page["imageinfo"]
    cont = data.get("continue") if isinstance(data, dict) else None
    return cont if isinstance(cont, dict) else {}


def _meta(extmetadata: dict[str, Any], key: str) -> Optional[str]:
    entry = extmetadata.get(key)
    value = entry.get("value") if isinstance(entry, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def _size(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_image_pages(pages: Sequence[dict[str, Any]], base_url: str) -> list[ImageCandidate]:
    """Turn `prop=imageinfo` pages (either answer shape) into candidates, in the API's order.

    Pages without a usable file URL (absent, not text, or not a valid URL) are left out.
    """
    candidates = []
    for page in pages:
        try:
            candidate = _candidate(page, base_url)
        except ValueError:  # urljoin on a malformed URL (e.g. "http://[oops")
            continue
        if candidate is not None:
            candidates.append(candidate)
    return candidates


def _candidate(page: Any, base_url: str) -> Optional[ImageCandidate]:
    infos = page.get("imageinfo") if isinstance(page, dict) else None
    if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
        return None
    info = infos[0]
    if not isinstance(info.get("url"), str) or not info["url"]:
        return None
    title = str(page.get("title", ""))
    name = title.split(":", 1)[1] if ":" in title else title
    ext = info.get("extmetadata") if isinstance(info.get("extmetadata"), dict) else {}
    artist = html_to_text(_meta(ext, "Artist"), 300) or None
    credit = html_to_text(_meta(ext, "Credit"), 300) or None
    licence = html_to_text(_meta(ext, "LicenseShortName")) or None
    licence_url = _meta(ext, "LicenseUrl")
    description = html_to_text(_meta(ext, "ImageDescription"), 500)
    object_name = html_to_text(_meta(ext, "ObjectName"), 200)
    stem = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", name).replace("_", " ").strip()
    caption = description or object_name or stem
    original = urljoin(base_url, info["url"])
    described = info.get("descriptionurl")
    description_url = urljoin(base_url, described) if isinstance(described, str) and described else ""
    attribution = ", ".join(
        x for x in (artist or "unknown author", licence or "licence unknown", description_url or original) if x
    )
    thumb = info.get("thumburl") if isinstance(info.get("thumburl"), str) else None
    sha1 = info.get("sha1")
    return ImageCandidate(
        file_title=title,
        file_name=name,
        download_url=urljoin(base_url, thumb or info["url"]),
        original_url=original,
        description_url=description_url,
        mime=str(info.get("mime") or ""),
        served_mime=str((info.get("thumbmime") if thumb else None) or info.get("mime") or ""),
        width=_size(info.get("width")),
        height=_size(info.get("height")),
        sha1=sha1 if isinstance(sha1, str) and sha1 else None,
        caption=caption,
        license=licence,
        license_url=licence_url,
        artist=artist,
        credit=credit,
        attribution=attribution,
    )


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
