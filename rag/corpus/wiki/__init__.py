"""Download Wikipedia (or any MediaWiki) articles with their pictures into a corpus folder.

`fetch_wikipedia(titles, out)` writes, under `out` (default `data/wiki/`):

    manifest.jsonl              one article record per article, one image record per image
    <Safe_Title>/article.md     "# Title", then the full plain text (sections as ## headings)
    <Safe_Title>/<File>.jpg     the article's photographs and paintings, verified

Every request goes to the MediaWiki API through one `PoliteSession` (User-Agent, rate
limit, retries, timeouts, size and time caps, allowed hosts): resolving a title (redirects,
missing pages, disambiguation pages with their candidate titles), search suggestions, the
plain text (TextExtracts), the canonical URL, revision and language (`prop=info`), the lead
image (`prop=pageimages`) and image metadata (`prop=imageinfo`: bounded-width thumbnail,
size, MIME type, SHA-1, licence and author). Answers are read by pure parsers that accept
both answer shapes (`formatversion=2` and the older one keyed by page id); no global state
of any other library is touched.

Re-running is cheap: an article whose revision is unchanged is not downloaded again, nor is
an image whose file on disk still matches the sha256 in the manifest. The manifest is
rewritten atomically after every article from the merged state, so it never holds
duplicate records and an interrupted run loses at most the article in progress.

Modules: `options` (what and where), `replies` and `candidates` (pure parsing of API
answers), `text` (names and Markdown), `reports`, `images` (one article's downloads) and
`fetcher` (the orchestration). Atomic writes live in `rag.corpus.atomic`, the manifest
model in `rag.corpus.manifest`.
"""

from rag.corpus.wiki.candidates import ImageCandidate, order_images, parse_image_pages, screen_image
from rag.corpus.wiki.fetcher import WikiFetcher, fetch_wikipedia
from rag.corpus.wiki.options import (
    ARTICLE_FILE,
    DEFAULT_API_URL,
    DEFAULT_OUT,
    FetchOptions,
    InvalidTitleError,
    check_lang,
    resolve_api_url,
)
from rag.corpus.wiki.replies import UnexpectedAnswer, pages_of
from rag.corpus.wiki.reports import ArticleReport, FetchReport, ImageReport
from rag.corpus.wiki.text import article_markdown, html_to_text, safe_name

__all__ = [
    "ARTICLE_FILE",
    "DEFAULT_API_URL",
    "DEFAULT_OUT",
    "ArticleReport",
    "FetchOptions",
    "FetchReport",
    "ImageCandidate",
    "ImageReport",
    "InvalidTitleError",
    "UnexpectedAnswer",
    "WikiFetcher",
    "article_markdown",
    "check_lang",
    "fetch_wikipedia",
    "html_to_text",
    "order_images",
    "pages_of",
    "parse_image_pages",
    "resolve_api_url",
    "safe_name",
    "screen_image",
]
