"""Downloading one article's images: screen, skip what is on disk, download, verify, record."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Optional

from rag.corpus.atomic import file_sha256, sha256_hex, utc_now, write_atomic
from rag.corpus.http import FetchError, PoliteSession
from rag.corpus.manifest import Manifest
from rag.corpus.wiki.candidates import (
    ImageCandidate,
    images_params,
    merge_image_batch,
    order_images,
    parse_image_pages,
    screen_image,
)
from rag.corpus.wiki.options import ARTICLE_FILE, FetchOptions
from rag.corpus.wiki.reports import ArticleReport, ImageReport
from rag.corpus.wiki.text import safe_name
from rag.errors import BadInputError
from rag.media.images import inspect_image_bytes

MAX_IMAGE_BATCHES = 20  # at most 20 answers of 50 files per article
_FORMAT_MIMES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}


class ImageFetcher:
    """Fetches the images of articles from one wiki into one output folder."""

    def __init__(
        self,
        client: PoliteSession,
        api_url: str,
        hosts: tuple[str, ...],
        schemes: tuple[str, ...],
        out: Path,
        options: FetchOptions,
    ) -> None:
        self.client = client
        self.api_url = api_url
        self.hosts = hosts
        self.schemes = schemes
        self.out = out
        self.options = options

    def candidates(self, page_id: int, lang: Optional[str]) -> list[ImageCandidate]:
        """Every file the page uses, following the API's continuation (bounded)."""
        params = images_params(page_id, self.options.thumb_width, lang)
        merged: dict[str, dict[str, Any]] = {}
        cont: dict[str, Any] = {}
        for _ in range(MAX_IMAGE_BATCHES):
            data = self.client.get_json(self.api_url, {**params, **cont}, self.hosts)
            cont = merge_image_batch(merged, data)
            if not cont:
                break
        return parse_image_pages(list(merged.values()), self.api_url)

    def fetch(
        self,
        article: ArticleReport,
        page_id: int,
        lead: Optional[str],
        folder: Path,
        manifest: Manifest,
        lang: Optional[str],
        disable: Optional[bool],
    ) -> None:
        """Fetch the images of one article into `folder`, recording each in `article.images`."""
        from tqdm import tqdm

        folder_rel = folder.relative_to(self.out).as_posix()
        candidates = order_images(self.candidates(page_id, lang), lead)
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
                if unchanged_upstream and file_sha256(old_path) == old.get("sha256"):
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
                record = self._download(candidate, article, folder, manifest, by_sha256, lang)
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

    def _download(
        self,
        candidate: ImageCandidate,
        article: ArticleReport,
        folder: Path,
        manifest: Manifest,
        by_sha256: dict[str, str],
        lang: Optional[str],
    ) -> Optional[dict[str, Any]]:
        download = self.client.download(
            candidate.download_url, self.hosts, max_bytes=self.options.max_bytes, schemes=self.schemes
        )
        data = download.content
        try:
            info = inspect_image_bytes(data, candidate.file_name, self.options.max_pixels)
        except BadInputError:
            raise
        except Exception as exc:  # a decoder failing on hostile bytes: this image fails, the fetch goes on
            raise BadInputError(candidate.file_name, f"cannot decode image ({type(exc).__name__}: {exc})") from None
        if min(info.width, info.height) < self.options.min_side:
            article.images.append(
                ImageReport(candidate.file_name, "dropped", f"too small once downloaded ({info.width}x{info.height})")
            )
            return None
        digest = sha256_hex(data)
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
        write_atomic(self.out / rel, data)
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
            "fetched_at": utc_now(),
        }
