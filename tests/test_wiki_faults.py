"""The fetcher against a MediaWiki that misbehaves: every case ends in a report line naming
the title or URL and the reason, within bounded time and memory, never a traceback.

Uses the loopback stand-in of tests/test_wiki.py (its fixtures and scripted faults).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rag.corpus.http import HttpPolicy
from rag.corpus.wiki import parse_image_pages, pages_of
from rag.corpus.wiki.replies import parse_content, parse_disambiguation, parse_resolution, parse_search
from test_wiki import API_PATH, StandIn, by_name, run, wiki  # noqa: F401  (wiki is a fixture)

BATMAN_IMAGE = "/images/orig/batman-cosplay.jpg"


def old_shape(text: str) -> str:
    """A formatversion=2 answer rewritten as older wikis send it: pages keyed by page id."""
    data = json.loads(text)
    pages = data["query"]["pages"]
    data["query"]["pages"] = {str(p.get("pageid", -1 - i)): p for i, p in enumerate(pages)}
    data["batchcomplete"] = ""
    return json.dumps(data)


def cli(wiki: StandIn, tmp_path: Path, *titles: str, extra: tuple[str, ...] = ()) -> Any:
    from rag.cli.fetch import command

    args = [*titles, "--out", str(tmp_path), "--min-interval", "0", "--retries", "0", "--quiet", *extra]
    result = CliRunner().invoke(command, args, env={"RAG_WIKI_API_URL": wiki.api_url})
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError, IndexError))
    return result


# ----------------------------------------------------------------------------- answer shapes


def test_older_answer_shape_is_read_like_the_new_one(wiki: StandIn, tmp_path: Path) -> None:
    for key in ("info--3003", "images--3003"):
        wiki.routes[key] = old_shape(wiki.routes[key])
    assert json.loads(wiki.routes["info--3003"])["query"]["pages"]["3003"]["title"] == "Batman"
    result = cli(wiki, tmp_path, "Batman")
    assert result.exit_code == 0, result.output
    assert "ok      Batman -> Batman (text fetched, rev 333; images: 1 saved, 1 dropped)" in result.stdout
    assert (tmp_path / "Batman" / "Batman_cosplay.jpg").is_file()


def test_pages_of_reads_both_shapes_and_rejects_the_rest() -> None:
    page = {"pageid": 7, "title": "T"}
    assert pages_of({"query": {"pages": [page]}}) == [page]
    assert pages_of({"query": {"pages": {"7": page, "-1": {"title": "F", "missing": ""}}}}) == [
        page, {"title": "F", "missing": ""}]
    for broken in ({}, {"query": []}, {"query": {"pages": "x"}}, {"query": {"pages": [1, "a"]}}, [], None):
        assert pages_of(broken) == []


def test_pure_parsers_on_both_shapes() -> None:
    url = "http://w/api.php"
    new = {"query": {"pages": [{"pageid": 5, "title": "Mercury", "pageprops": {"disambiguation": ""}}]}}
    old = {"query": {"pages": {"5": {"pageid": 5, "title": "Mercury", "pageprops": {"disambiguation": ""}}}}}
    assert parse_resolution(new, "Mercury", url) == parse_resolution(old, "Mercury", url)
    assert parse_resolution(new, "Mercury", url).status == "disambiguation"
    assert parse_resolution({"query": {"pages": [{"title": "X", "missing": True}]}}, "X", url).status == "missing"
    html = '<ul><li class="tocsection-1"><a>Contents</a></li><li><a href="/a">A (x)</a>, text</li><li>no link</li></ul>'
    assert parse_disambiguation({"query": {"pages": [{"revisions": [{"content": html}]}]}}) == ["A (x)"]
    assert parse_disambiguation({"query": {"pages": {"5": {"revisions": [{"*": html}]}}}}) == ["A (x)"]
    assert parse_disambiguation({"query": {"pages": [{"revisions": "?"}]}}) == []
    text = {"query": {"pages": {"5": {"pageid": 5, "extract": "Body.", "revisions": [{"revid": 9}]}}}}
    assert parse_content(text, 5, "T", url) == ("Body.", 9)
    assert parse_search({"query": {"search": [{"title": "A"}, "junk", {"title": 3}], "searchinfo": {"suggestion": "b"}}}) == ["b", "A"]
    assert parse_search({"query": "nothing"}) == []
    odd = [{"title": "File:A.jpg", "imageinfo": [{"url": 5}]}, {"title": "File:B.jpg", "imageinfo": "x"},
           {"title": "File:C.jpg", "imageinfo": [{"url": "/c.jpg", "width": "wide", "sha1": 3, "extmetadata": []}]}]
    [only] = parse_image_pages(odd, url)
    assert (only.file_name, only.width, only.sha1, only.download_url) == ("C.jpg", 0, None, "http://w/c.jpg")


@pytest.mark.parametrize(
    "answer, reason",
    [
        ({"batchcomplete": ""}, "holds no page (expected query.pages)"),
        ({"query": []}, "holds no page (expected query.pages)"),
        ({"query": {"pages": "Batman"}}, "holds no page (expected query.pages)"),
        ({"query": {"pages": {"3003": {"title": "Batman"}}}}, "has no page id"),
        ({"query": {"pages": [{"pageid": "x", "title": "Batman"}]}}, "has no page id"),
    ],
)
def test_answers_missing_keys_are_reported(wiki: StandIn, tmp_path: Path, answer: dict, reason: str) -> None:
    wiki.routes["resolve--Batman"] = json.dumps(answer)
    report = run(wiki, ["Batman", "Vincent van Gogh"], tmp_path)
    batman, vincent = report.articles
    assert batman.status == "error" and batman.error == f"{wiki.api_url}: the answer for 'Batman' {reason}"
    assert vincent.status == "fetched" and report.exit_code == 1


def test_text_answer_without_extract_and_info_without_keys(wiki: StandIn, tmp_path: Path) -> None:
    wiki.routes["info--3003"] = json.dumps({"query": {}})
    wiki.routes["content--Batman"] = json.dumps({"query": {"pages": {"3003": {"pageid": 3003, "title": "Batman"}}}})
    article = run(wiki, ["Batman"], tmp_path).articles[0]
    assert article.status == "error"
    assert article.error == (f"{wiki.api_url} gave no plain text for 'Batman' (missing 'extract'); "
                             "the wiki needs the TextExtracts extension")


# ----------------------------------------------------------------------------- not JSON at all


@pytest.mark.parametrize(
    "content_type, body, reason",
    [
        ("text/html", b"<!DOCTYPE html><html><body>Maintenance</body></html>",
         "the answer is not JSON (starts with '<!DOCTYPE html><html><body>Maintenance</body></html>'); "
         "is this an api.php URL?"),
        ("application/json", b"", "the answer is empty, not JSON; is this an api.php URL?"),
        ("application/json", b"  \n", "the answer is empty, not JSON; is this an api.php URL?"),
        ("application/json", b"[1, 2]", "expected a JSON object, got list"),
        ("application/json", b"\xff\xfe{}", "the answer is not JSON (starts with '\ufffd\ufffd{}'); is this an api.php URL?"),
        ("application/json", b"[" * 200_000, "the JSON answer is nested too deeply to read"),
    ],
)
def test_html_empty_or_odd_bodies_name_the_url(wiki: StandIn, tmp_path: Path, content_type: str, body: bytes,
                                              reason: str) -> None:
    wiki.plans[API_PATH].append(("body", content_type, body))
    result = cli(wiki, tmp_path, "Batman")
    assert result.exit_code == 1
    assert f"FAILED  Batman: error: {wiki.api_url}: {reason}" in result.stdout


# ----------------------------------------------------------------------------- redirects


def test_http_redirect_loop_on_the_api(wiki: StandIn, tmp_path: Path) -> None:
    loop = wiki.api_url + "?action=query&titles=Batman"
    wiki.plans[API_PATH].extend([("status", 302, {"Location": loop})] * 6)
    result = cli(wiki, tmp_path, "Batman")
    assert result.exit_code == 1
    assert f"FAILED  Batman: error: {wiki.api_url}: more than 5 redirects" in result.stdout


def test_http_redirect_loop_on_an_image(wiki: StandIn, tmp_path: Path) -> None:
    wiki.redirects["/redirect/loop.jpg"] = wiki.base + "/redirect/loop.jpg"
    wiki.routes["images--3003"] = wiki.routes["images--3003"].replace(BATMAN_IMAGE, "/redirect/loop.jpg")
    result = cli(wiki, tmp_path, "Batman")
    assert result.exit_code == 0, result.output  # the article came; one image failed
    assert f"image failed: {wiki.base}/redirect/loop.jpg: more than 5 redirects" in result.stdout
    assert wiki.counts["/redirect/loop.jpg"] == 6


def test_page_redirect_loop(wiki: StandIn, tmp_path: Path) -> None:
    wiki.routes["resolve--Loop_A"] = json.dumps({"query": {
        "redirects": [{"from": "Loop A", "to": "Loop B"}, {"from": "Loop B", "to": "Loop A"}],
        "pages": {"77": {"pageid": 77, "title": "Loop A", "redirect": ""}}}})
    wiki.routes["resolve--Loop_C"] = json.dumps({"query": {"pages": [{"pageid": 78, "title": "Loop C", "redirect": True}]}})
    report = run(wiki, ["Loop A", "Loop C"], tmp_path)
    loop_a, loop_c = report.articles
    assert loop_a.status == "error" and loop_a.error == f"{wiki.api_url}: redirect loop: Loop A -> Loop B -> Loop A"
    assert loop_c.error == (f"{wiki.api_url}: 'Loop C' is a redirect the wiki did not follow "
                            "(a loop or a broken chain)")
    assert report.exit_code == 1 and wiki.api_counts["resolve--Loop_A"] == 1


# ----------------------------------------------------------------------------- size and time caps


def test_slow_trickle_is_abandoned_at_the_time_cap(wiki: StandIn, tmp_path: Path) -> None:
    wiki.plans[BATMAN_IMAGE].append(("trickle", 0.02, 2000))
    policy = HttpPolicy(min_interval=0, timeout=5, retries=2, backoff=0.01, jitter=0, max_time=0.5)
    started = time.monotonic()
    article = run(wiki, ["Batman"], tmp_path, policy=policy).articles[0]
    assert time.monotonic() - started < 3
    failed = by_name(article)["Batman cosplay.jpg"]
    assert failed.status == "failed" and article.status == "partial"
    assert failed.reason.startswith(f"{wiki.base}{BATMAN_IMAGE}: still sending after 0.5 s (")
    assert failed.reason.endswith(" bytes so far); download abandoned")
    assert wiki.counts[BATMAN_IMAGE] == 1  # a trickle is not retried


def test_slow_trickle_on_the_api(wiki: StandIn, tmp_path: Path) -> None:
    wiki.plans[API_PATH].append(("trickle", 0.02, 2000))
    policy = HttpPolicy(min_interval=0, timeout=5, retries=0, max_time=0.3)
    started = time.monotonic()
    report = run(wiki, ["Batman", "Vincent van Gogh"], tmp_path, policy=policy)
    assert time.monotonic() - started < 3
    assert report.articles[0].status == "error" and "still sending after 0.3 s" in report.articles[0].error
    assert report.articles[1].status == "fetched"


def test_endless_image_body_stops_at_the_byte_cap(wiki: StandIn, tmp_path: Path) -> None:
    wiki.plans[BATMAN_IMAGE].append(("endless", "image/jpeg"))
    article = run(wiki, ["Batman"], tmp_path).articles[0]
    failed = by_name(article)["Batman cosplay.jpg"]
    assert failed.reason == f"{wiki.base}{BATMAN_IMAGE}: more than 100,000 bytes; download abandoned"
    assert not list(tmp_path.rglob("*.part")) and not (tmp_path / "Batman" / "Batman_cosplay.jpg").exists()


def test_endless_api_body_stops_at_the_api_cap(wiki: StandIn, tmp_path: Path) -> None:
    wiki.plans[API_PATH].append(("endless", "application/json"))
    policy = HttpPolicy(min_interval=0, timeout=5, retries=0, max_api_bytes=300_000)
    article = run(wiki, ["Batman"], tmp_path, policy=policy).articles[0]
    assert article.error == f"{wiki.api_url}: more than 300,000 bytes; download abandoned"


def test_server_text_cannot_drive_the_terminal(wiki: StandIn, tmp_path: Path) -> None:
    wiki.routes["parse--Mercury"] = wiki.routes["parse--Mercury"].replace(
        "Mercury (element)</a>", "Mercury \\u001b[2J\\u202e(element)</a>")
    wiki.plans[API_PATH].append(("body", "text/html", b"\x1b]0;pwned\x07<html>" + b"x" * 2000))
    result = cli(wiki, tmp_path, "Batman", "Mercury")
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\u202e" not in result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"FAILED  Batman: error: {wiki.api_url}: the answer is not JSON (starts with ")
    assert "\\x1b]0;pwned\\x07<html>" in lines[0]
    assert lines[2] == "        candidates: Mercury (planet); Mercury \\x1b[2J\\u202e(element); Mercury (mythology)"


def test_cli_max_time_abandons_a_trickle(wiki: StandIn, tmp_path: Path) -> None:
    wiki.plans[BATMAN_IMAGE].append(("trickle", 0.02, 2000))
    started = time.monotonic()
    result = cli(wiki, tmp_path, "Batman", extra=("--max-time", "0.4"))
    assert time.monotonic() - started < 3
    assert result.exit_code == 0, result.output
    assert f"image failed: {wiki.base}{BATMAN_IMAGE}: still sending after 0.4 s (" in result.stdout


def test_fields_of_the_wrong_type_and_malformed_urls(wiki: StandIn, tmp_path: Path, monkeypatch) -> None:
    wiki.routes["info--3003"] = json.dumps({"query": {"pages": [
        {"pageid": 3003, "title": "Batman", "canonicalurl": {"x": 1}, "fullurl": 7, "pagelanguage": ["en"],
         "lastrevid": "333", "pageimage": 42}]}})
    images = json.loads(wiki.routes["images--3003"])
    images["query"]["pages"].append({"title": "File:Broken url.jpg", "imageinfo": [{"url": "http://[oops/x.jpg",
                                                                                    "mime": "image/jpeg"}]})
    wiki.routes["images--3003"] = json.dumps(images)
    wiki.redirects[BATMAN_IMAGE] = "http://[bad"
    article = run(wiki, ["Batman"], tmp_path).articles[0]
    assert article.status == "partial" and article.url == wiki.base + "/wiki/Batman"  # from the resolve answer
    assert article.revision_id == 333  # from the text answer
    assert [i.file_name for i in article.images] == ["Batman cosplay.jpg", "DC Comics logo.png"]
    assert by_name(article)["Batman cosplay.jpg"].reason == (
        f"{wiki.base}{BATMAN_IMAGE}: not a valid URL, or redirects to one (Invalid IPv6 URL)")
    record = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])
    assert (record["url"], record["lang"], record["revision_id"]) == (wiki.base + "/wiki/Batman", None, 333)


def test_a_decoder_failing_on_hostile_bytes_fails_that_image_only(wiki: StandIn, tmp_path: Path, monkeypatch) -> None:
    from rag.corpus.wiki import images

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(images, "inspect_image_bytes", broken)
    article = run(wiki, ["Batman"], tmp_path).articles[0]
    assert by_name(article)["Batman cosplay.jpg"].reason == (
        "Batman cosplay.jpg: cannot decode image (IndexError: list index out of range)")
    assert article.status == "partial" and article.text == "fetched"


def test_malformed_api_urls_are_refused_with_a_message(tmp_path: Path) -> None:
    from rag.config import Settings
    from rag.corpus.wiki import resolve_api_url
    from rag.errors import BadInputError

    for bad in ("http://[oops/w/api.php", "https://host:99999/w/api.php", "api.php", "https://"):
        with pytest.raises(BadInputError, match="is not an http\\(s\\) URL"):
            resolve_api_url(Settings(), api_url=bad)


def test_a_full_disk_stops_the_fetch_with_a_message(wiki: StandIn, tmp_path: Path, monkeypatch) -> None:
    from rag.corpus import atomic

    cli(wiki, tmp_path, "Batman")
    before = (tmp_path / "manifest.jsonl").read_bytes()
    real_open = Path.open

    def full(self, mode="r", *args, **kwargs):
        if "w" in mode and self.name.endswith(".part"):
            raise OSError(28, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(atomic.Path, "open", full)
    result = cli(wiki, tmp_path, "Vincent van Gogh")
    assert result.exit_code == 1
    assert result.output.endswith(
        f"Error: cannot save {tmp_path / 'manifest.jsonl'} (No space left on device); the previous manifest is "
        "intact: free some space or fix the permissions, then fetch again\n")
    assert (tmp_path / "manifest.jsonl").read_bytes() == before
    assert not list(tmp_path.rglob("*.part"))
