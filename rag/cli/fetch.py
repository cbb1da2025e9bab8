"""`rag fetch`: download Wikipedia articles with their images into a corpus folder.

Everything printed that came from the server (titles, candidates, error text) goes through
`shown`: control characters are escaped, so a hostile wiki cannot drive the terminal.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import click

from rag.cli.common import emit_json, settings_from, stderr, user_errors

EXIT_OK = 0
EXIT_FAILED = 1  # at least one title gave no article, or the fetch could not start or had to stop
EXIT_USAGE = 2  # click's own code for bad options
SHOWN_LIMIT = 500  # characters of one server-given field on a report line
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(text: object, limit: int = SHOWN_LIMIT) -> str:
    """Server-given text for a terminal line: control characters escaped, length bounded."""
    value = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(text))
    return value if len(value) <= limit else value[: limit - 1] + "…"


@click.command("fetch")
@click.argument("titles", nargs=-1, required=True)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("data/wiki"),
              show_default=True, help="Corpus folder: one sub-folder per article, manifest.jsonl at its root.")
@click.option("--max-images", type=click.IntRange(min=0), default=20, show_default=True,
              help="Images kept per article (0: text only).")
@click.option("--lang", default=None, help="Wikipedia language (fr, de, ...): uses https://<lang>.wikipedia.org "
              "unless a custom endpoint is set.")
@click.option("--api-url", default=None, help="Any MediaWiki api.php endpoint [env RAG_WIKI_API_URL].")
@click.option("--thumb-width", type=click.IntRange(min=64), default=1280, show_default=True,
              help="Download thumbnails this wide instead of originals.")
@click.option("--min-side", type=click.IntRange(min=1), default=100, show_default=True,
              help="Drop images whose shorter side is smaller (icons).")
@click.option("--max-mb", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Abandon an image download past this size.")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="Another host images may come from (repeatable); the API host and, for Wikimedia "
              "wikis, upload.wikimedia.org are always allowed.")
@click.option("--min-interval", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Seconds between two requests.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds per request before it counts as timed out.")
@click.option("--retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="Retries on timeouts, connection errors, 429 and 5xx (exponential backoff).")
@click.option("--max-time", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds one request may take in all, body included (a trickling server is abandoned).")
@click.option("--contact", default=None,
              help="Your URL or e-mail for the User-Agent, as Wikimedia asks [env RAG_WIKI_CONTACT].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@user_errors
def command(
    titles: tuple[str, ...],
    out: Path,
    max_images: int,
    lang: Optional[str],
    api_url: Optional[str],
    thumb_width: int,
    min_side: int,
    max_mb: float,
    allow_hosts: tuple[str, ...],
    min_interval: float,
    timeout: float,
    retries: int,
    max_time: float,
    contact: Optional[str],
    as_json: bool,
    quiet: bool,
) -> None:
    """Download Wikipedia articles (text and pictures) into a corpus folder for `rag ingest`.

    Re-running resumes: unchanged articles and images already on disk are not downloaded
    again. Exit status: 0 when every title gave an article (some images may have been
    dropped or failed, see the report), 1 when at least one title failed entirely (missing,
    disambiguation, invalid title, network or API error, an answer the fetcher cannot read)
    or the fetch could not start or had to stop (a full disk), 2 for bad options. Problems
    are report lines naming the title or URL and the reason, never a traceback.
    """
    from rag.corpus.http import HttpPolicy
    from rag.corpus.wiki import FetchOptions, fetch_wikipedia

    settings = settings_from(wiki_api_url=api_url)
    options = FetchOptions(
        max_images=max_images,
        thumb_width=thumb_width,
        min_side=min_side,
        max_bytes=int(max_mb * 1024 * 1024),
        max_pixels=settings.max_image_pixels,
        allowed_hosts=allow_hosts,
    )
    policy = HttpPolicy(min_interval=min_interval, timeout=timeout, retries=retries, max_time=max_time)
    report = fetch_wikipedia(
        titles,
        out,
        settings=settings,
        api_url=api_url,
        lang=lang,
        options=options,
        policy=policy,
        contact=contact or settings.wiki_contact,
        progress=False if quiet else None,
    )
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_human(report)
    if report.exit_code:
        click.get_current_context().exit(report.exit_code)


def _print_human(report) -> None:  # type: ignore[no-untyped-def]
    for article in report.articles:
        name = shown(article.title or article.requested)
        if article.failed:
            click.echo(f"FAILED  {shown(article.requested)}: {article.status}: {shown(article.error)}")
            if article.candidates:
                first = [shown(c, 200) for c in article.candidates[:10]]
                more = f" (+{len(article.candidates) - len(first)} more)" if len(article.candidates) > len(first) else ""
                click.echo("        candidates: " + "; ".join(first) + more)
            continue
        if article.status == "duplicate":
            click.echo(f"same    {shown(article.requested)} -> {name} ({shown('; '.join(article.notes))})")
            continue
        counts = ", ".join(
            f"{article.count(s)} {s}" for s in ("saved", "present", "dropped", "duplicate", "failed") if article.count(s)
        )
        click.echo(
            f"{'ok' if article.status == 'fetched' else 'partial':<7} {name} -> {shown(article.folder)} "
            f"(text {article.text}, rev {article.revision_id}; images: {counts or 'none'})"
        )
        for image in article.images:
            if image.status == "failed":
                click.echo(f"        image failed: {shown(image.reason)}")
    totals = report.to_dict()["totals"]
    stderr(
        f"{totals['articles'] - totals['failed']}/{totals['articles']} articles, "
        f"{totals['images_saved']} images saved, {totals['images_present']} already present, "
        f"{report.requests} requests; manifest: {report.manifest}"
    )
