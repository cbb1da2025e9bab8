"""The fetch itself: resolve each title, save its text, then its images; keep the manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence, Union
from urllib.parse import urlsplit

from rag.config import Settings
from rag.corpus.atomic import file_sha256, sha256_hex, utc_now, write_atomic
from rag.corpus.http import FetchError, HttpPolicy, PoliteSession, wiki_hosts
from rag.corpus.manifest import Manifest
from rag.corpus.wiki.images import ImageFetcher
from rag.corpus.wiki.options import (
    ARTICLE_FILE,
    DEFAULT_API_URL,
    DEFAULT_OUT,
    FetchOptions,
    InvalidTitleError,
    check_api_url,
    check_lang,
    check_title,
    lang_from_host,
    resolve_api_url,
)
from rag.corpus.wiki.replies import (
    Resolution,
    content_params,
    disambiguation_params,
    info_params,
    parse_content,
    parse_disambiguation,
    parse_info,
    parse_resolution,
    parse_search,
    resolve_params,
    search_params,
)
from rag.corpus.wiki.reports import ArticleReport, FetchReport
from rag.corpus.wiki.text import article_markdown, safe_name
from rag.errors import BadInputError, RagError


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
        self.api_url = check_api_url(api_url)
        self.lang = check_lang(lang) if lang else None
        self.options = options or FetchOptions()
        self.client = client or PoliteSession()
        self.hosts = wiki_hosts(self.api_url, self.options.allowed_hosts)
        # Media from an https wiki must stay https; a plain-http wiki (a local one) may use both.
        schemes = ("https",) if urlsplit(self.api_url).scheme == "https" else ("http", "https")
        self.out = Path(out)
        self.images = ImageFetcher(self.client, self.api_url, self.hosts, schemes, self.out, self.options)
        self.progress = progress
        self._current: Optional[ArticleReport] = None

    # -- entry point ------------------------------------------------------------------

    def fetch(self, titles: Sequence[str]) -> FetchReport:
        """Fetch every title; per-title problems go into the report, never raise."""
        from tqdm import tqdm

        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RagError(f"cannot create the output folder {self.out}: {exc.strerror}") from None
        manifest = _load_manifest(self.out)
        report = FetchReport(out=str(self.out), manifest=str(manifest.path), api_url=self.api_url, started_at=utc_now())
        previous_hook = self.client.on_retry
        self.client.on_retry = self._note
        sent_before = self.client.requests_sent
        seen: dict[int, str] = {}  # page id -> first requested title
        disable = None if self.progress is None else not self.progress
        try:
            bar = tqdm(titles, desc="articles", unit="article", disable=disable, leave=False)
            for requested in bar:
                article = ArticleReport(requested=requested)
                self._current = article
                report.articles.append(article)
                bar.set_postfix_str(requested[:30])
                try:
                    self._fetch_one(article, manifest, seen, disable)
                except InvalidTitleError as exc:
                    article.status, article.error = "invalid", str(exc)
                except OSError as exc:
                    article.status, article.error = "error", f"cannot write under {self.out}: {exc}"
                except RagError as exc:  # FetchError included
                    article.status, article.error = "error", str(exc)
                finally:
                    _save(manifest)
            bar.close()
        finally:
            self.client.on_retry = previous_hook
            self._current = None
            report.requests = self.client.requests_sent - sent_before
            report.finished_at = utc_now()
        return report

    def _note(self, message: str) -> None:
        if self._current is not None:
            self._current.notes.append(message)

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.client.get_json(self.api_url, params, self.hosts)

    # -- one article ------------------------------------------------------------------

    def _resolve(self, article: ArticleReport, title: str) -> Optional[Resolution]:
        """The page behind `title`, or None after recording why there is none."""
        found = parse_resolution(self._get(resolve_params(title)), title, self.api_url)
        if found.status == "invalid":
            raise InvalidTitleError(found.reason or f"{title!r}: the wiki rejects this title")
        if found.status == "missing":
            article.status = "missing"
            article.error = f"no page titled {title!r} on {self.api_url}"
            article.candidates = self._suggest(title)
            if article.candidates:
                article.error += "; did you mean one of the candidates?"
            return None
        if found.status == "unresolved":
            article.status, article.title = "error", found.title
            article.error = f"{self.api_url}: {found.reason}"
            return None
        if found.status == "disambiguation":
            article.status, article.title = "disambiguation", found.title
            article.error = f"{found.title!r} is a disambiguation page; pick one of the candidates"
            try:
                article.candidates = parse_disambiguation(self._get(disambiguation_params(found.title)))
            except FetchError as exc:
                article.notes.append(f"could not list the candidates: {exc}")
            return None
        return found

    def _fetch_one(self, article: ArticleReport, manifest: Manifest, seen: dict[int, str], disable: Optional[bool]) -> None:
        page = self._resolve(article, check_title(article.requested))
        if page is None or page.page_id is None:
            return
        article.title, article.page_id = page.title, page.page_id
        if page.page_id in seen:
            article.status = "duplicate"
            article.notes.append(f"same page as {seen[page.page_id]!r}, fetched once")
            return
        seen[page.page_id] = article.requested
        info = parse_info(self._get(info_params(page.page_id)), page.page_id)
        article.url = info.url or page.url
        lang = self.lang or info.lang or lang_from_host(self.api_url)

        folder = self._folder_for(page.title)
        folder_rel = folder.relative_to(self.out).as_posix()
        article.folder = folder_rel
        text_rel = f"{folder_rel}/{ARTICLE_FILE}"
        text_path = self.out / text_rel

        old = manifest.get(text_rel)
        latest = info.latest_revision
        if (
            old is not None
            and latest is not None
            and old.get("revision_id") == latest
            and old.get("sha256")
            and file_sha256(text_path) == old.get("sha256")
        ):
            article.text = "unchanged"
            article.revision_id = latest
            record = dict(old)
        else:
            content, revision = parse_content(self._get(content_params(page.title)), page.page_id, page.title, self.api_url)
            data = article_markdown(page.title, content).encode("utf-8")
            folder.mkdir(exist_ok=True)
            write_atomic(text_path, data)
            article.text = "fetched"
            article.revision_id = revision if revision is not None else latest
            record = {
                "kind": "article",
                "path": text_rel,
                "source": "wikipedia",
                "api_url": self.api_url,
                "fetched_at": utc_now(),
                "sha256": sha256_hex(data),
                "bytes": len(data),
            }
        record.update(
            title=page.title, url=article.url, page_id=article.page_id, revision_id=article.revision_id, lang=lang
        )
        manifest.put(record)

        if self.options.max_images > 0:
            self.images.fetch(article, page.page_id, info.lead_image, folder, manifest, lang, disable)
        article.status = "partial" if article.count("failed") else "fetched"

    def _suggest(self, title: str) -> list[str]:
        if self.options.search_suggestions <= 0:
            return []
        try:
            found = parse_search(self._get(search_params(title, self.options.search_suggestions)))
        except FetchError as exc:
            self._note(f"search for suggestions failed: {exc}")
            return []
        return found

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


def _save(manifest: Manifest) -> None:
    try:
        manifest.save()
    except OSError as exc:  # a full disk or a read-only folder: stop, the manifest on disk is intact
        raise RagError(
            f"cannot save {manifest.path} ({exc.strerror or exc}); the previous manifest is intact: "
            "free some space or fix the permissions, then fetch again"
        ) from None


def _load_manifest(out: Path) -> Manifest:
    try:
        return Manifest.load(out)
    except ValueError as exc:
        raise BadInputError(f"{exc}; fix or delete that line, then fetch again") from None


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
