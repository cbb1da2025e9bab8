"""The Wikipedia fetcher against a local stand-in for the MediaWiki API (no network at all).

The stand-in serves the hand-written answers in tests/fixtures/wiki/ (one file per API
answer, named `<kind>--<title or page id>.json`), images generated here with PIL, and
scripted misbehaviour (429, slow answers, redirects); it counts requests per path.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from click.testing import CliRunner
from PIL import Image

from rag.config import Settings
from rag.corpus.http import (
    FetchError,
    ForeignHostError,
    HttpPolicy,
    PoliteSession,
    check_url,
    parse_retry_after,
    wiki_hosts,
)
from rag.corpus.manifest import MANIFEST_NAME, read_manifest
from rag.corpus.wiki import (
    FetchOptions,
    ImageCandidate,
    article_markdown,
    fetch_wikipedia,
    html_to_text,
    resolve_api_url,
    safe_name,
    screen_image,
)
from rag.errors import BadInputError

FIXTURES = Path(__file__).parent / "fixtures" / "wiki"
API_PATH = "/w/api.php"


# ----------------------------------------------------------------------------- stand-in server


def _slug(value: str) -> str:
    return quote(value.replace(" ", "_"), safe="()_,")


def route_key(params: dict[str, str]) -> str:
    """Which fixture answers these API parameters (mirrors the requests the fetcher makes)."""
    prop = params.get("prop", "")
    if params.get("list") == "search":
        return "search--" + _slug(params["srsearch"])
    if params.get("generator") == "images":
        key = "images--" + params["pageids"]
        return key + ("@" + _slug(params["gimcontinue"]) if "gimcontinue" in params else "")
    if "pageprops" in prop:  # the wikipedia package resolving a title
        return "resolve--" + _slug(params.get("titles") or params.get("pageids", ""))
    if prop == "revisions" and "rvparse" in params:  # ... reading a disambiguation page
        return "parse--" + _slug(params["titles"])
    if "extracts" in prop:  # ... downloading the plain text
        return "content--" + _slug(params["titles"])
    if "info" in prop:  # our own info|pageimages call
        return "info--" + params["pageids"]
    return "unknown--" + _slug(json.dumps(params, sort_keys=True))


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 7):  # some structure, so every picture hashes differently
        image.putpixel((x, x % size[1]), (255 - colour[0], x % 255, colour[2]))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


class StandIn:
    """A MediaWiki look-alike on 127.0.0.1 with per-path request counts and scripted faults."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.api_counts: Counter[str] = Counter()
        self.user_agents: list[str] = []
        self.plans: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.redirects: dict[str, str] = {}
        self.routes: dict[str, str] = {}
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                try:
                    stand_in.handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{port}"
        self.foreign = f"http://localhost:{port}"  # same server, another host name: must be refused
        self.api_url = self.base + API_PATH
        for path in FIXTURES.glob("*.json"):
            text = path.read_text(encoding="utf-8")
            self.routes[path.stem] = text.replace("{base}", self.base).replace("{foreign}", self.foreign)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def image_requests(self) -> int:
        return sum(n for path, n in self.counts.items() if path.startswith(("/images/", "/redirect/")))

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        path = parts.path
        with self._lock:
            self.counts[path] += 1
            self.user_agents.append(request.headers.get("User-Agent", ""))
            step = self.plans[path].pop(0) if self.plans[path] else None
        if step is not None and step[0] == "delay":
            time.sleep(step[1])
        elif step is not None and step[0] == "body":  # this answer instead of the usual one
            _, content_type, body = step
            self._send(request, 200, body, content_type)
            return
        elif step is not None and step[0] == "trickle":  # a byte at a time, slowly
            _, interval, total = step
            request.send_response(200)
            request.send_header("Content-Type", "image/jpeg")
            request.send_header("Content-Length", str(total))
            request.end_headers()
            for _ in range(total):
                request.wfile.write(b"x")
                request.wfile.flush()
                time.sleep(interval)
            return
        elif step is not None and step[0] == "endless":  # a body that never ends (no length)
            request.send_response(200)
            request.send_header("Content-Type", step[1])
            request.send_header("Connection", "close")
            request.end_headers()
            block = b"\xff\xd8\xff" + bytes(65533)
            for _ in range(10_000):  # 640 MB at most: the client gives up long before
                request.wfile.write(block)
            return
        elif step is not None and step[0] == "status":
            _, code, headers = step
            body = b"<html><body>slow down</body></html>"
            request.send_response(code)
            for name, value in headers.items():
                request.send_header(name, value)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            return
        if path == API_PATH:
            params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            key = route_key(params)
            with self._lock:
                self.api_counts[key] += 1
            body = self.routes.get(key)
            if body is None:
                body = json.dumps({"error": {"code": "nofixture", "info": f"no fixture {key}"}})
            self._send(request, 200, body.encode("utf-8"), "application/json; charset=utf-8")
        elif path in self.redirects:
            request.send_response(302)
            request.send_header("Location", self.redirects[path])
            request.send_header("Content-Length", "0")
            request.end_headers()
        elif path in self.files:
            data, content_type = self.files[path]
            self._send(request, 200, data, content_type)
        else:
            self._send(request, 404, b"<html>404 Not Found</html>", "text/html")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
        request.send_response(code)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


PORTRAIT = _jpeg((200, 240), (200, 120, 40))


@pytest.fixture()
def wiki():
    stand_in = StandIn()
    files = {
        # Vincent van Gogh
        "/images/thumb/self-portrait.jpg": (PORTRAIT, "image/jpeg"),
        "/images/thumb/sunflowers-copy.jpg": (PORTRAIT, "image/jpeg"),  # same bytes, other name
        "/images/thumb/sunflowers-again.jpg": (PORTRAIT, "image/jpeg"),
        "/images/thumb/starry.jpg": (_png((320, 256), (20, 40, 160)), "image/jpeg"),  # a PNG named .jpg
        "/images/thumb/wheat-field.tif.jpg": (_jpeg((320, 256), (180, 170, 60)), "image/jpeg"),
        "/images/thumb/flag.png": (_png((300, 200), (200, 0, 0)), "image/png"),
        "/images/orig/tiny.png": (_png((16, 16), (0, 0, 0)), "image/png"),
        "/images/orig/signature.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        # San Francisco
        "/images/thumb/golden-gate.jpg": (_jpeg((320, 240), (190, 60, 30)), "image/jpeg"),
        "/images/thumb/cable-car.jpg": (b"<!DOCTYPE html><html><body>Error 503</body></html>", "image/jpeg"),
        "/images/thumb/huge.jpg": (b"\xff\xd8\xff" + bytes(150_000), "image/jpeg"),
        "/images/thumb/painted-ladies.jpg": (_jpeg((300, 200), (120, 200, 220)), "image/jpeg"),
        "/images/skyline.jpg": (_jpeg((300, 200), (1, 2, 3)), "image/jpeg"),
        "/images/alcatraz.jpg": (_jpeg((300, 200), (3, 2, 1)), "image/jpeg"),
        # Batman
        "/images/orig/batman-cosplay.jpg": (_jpeg((200, 250), (30, 30, 30)), "image/jpeg"),
        "/images/orig/dc-logo.png": (_png((400, 400), (0, 80, 200)), "image/png"),
    }
    stand_in.files.update(files)
    stand_in.redirects["/redirect/alcatraz.jpg"] = stand_in.foreign + "/images/alcatraz.jpg"
    stand_in.redirects["/redirect/painted-ladies.jpg"] = stand_in.base + "/images/thumb/painted-ladies.jpg"
    yield stand_in
    stand_in.close()


class FakeTime:
    """Clock and sleep for PoliteSession: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def run(wiki: StandIn, titles, out: Path, fake: Optional[FakeTime] = None, policy: Optional[HttpPolicy] = None, **options: Any):
    fake = fake or FakeTime()
    policy = policy or HttpPolicy(min_interval=0, timeout=5, retries=2, backoff=0.5, jitter=0)
    client = PoliteSession(policy, clock=fake.clock, sleep=fake.sleep)
    opts = FetchOptions(max_bytes=100_000, **options)
    return fetch_wikipedia(
        titles, out, settings=Settings(), api_url=wiki.api_url, options=opts, client=client, progress=False
    )


def manifest_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text(encoding="utf-8").splitlines() if line]


def by_name(article) -> dict[str, Any]:
    return {image.file_name: image for image in article.images}


# ----------------------------------------------------------------------------- end to end


def test_article_with_images_files_extensions_and_manifest(wiki: StandIn, tmp_path: Path) -> None:
    report = run(wiki, ["Vincent van Gogh"], tmp_path)
    assert report.ok and report.exit_code == 0
    article = report.articles[0]
    assert article.status == "fetched", article.to_dict()
    assert article.folder == "Vincent_van_Gogh" and article.text == "fetched" and article.revision_id == 111

    text = (tmp_path / "Vincent_van_Gogh" / "article.md").read_text(encoding="utf-8")
    assert text.startswith("# Vincent van Gogh\n\nVincent Willem van Gogh")
    assert "## Life\n\n### Early years\n\nVan Gogh was born" in text
    assert "References" not in text and "External links" not in text  # empty sections dropped

    images = by_name(article)
    assert images["Van Gogh Self-Portrait 1887.jpg"].status == "saved"
    assert images["The Starry Night.jpg"].path == "Vincent_van_Gogh/The_Starry_Night.png"  # real format wins
    assert images["Wheat Field with Cypresses.tif"].path == "Vincent_van_Gogh/Wheat_Field_with_Cypresses.jpg"
    assert "SVG" in images["Van Gogh signature.svg"].reason
    assert images["Flag of the Netherlands.png"].status == "dropped"
    assert "too small" in images["Tiny bullet.png"].reason
    assert images["Sunflowers again.jpg"].status == "duplicate"  # same SHA-1 upstream: not downloaded
    assert images["Sunflowers copy.jpg"].status == "duplicate"  # same bytes: downloaded, saved once
    assert [i.file_name for i in article.images][0] == "Van Gogh Self-Portrait 1887.jpg"  # lead image first

    saved = sorted(p.name for p in (tmp_path / "Vincent_van_Gogh").iterdir())
    assert saved == [
        "The_Starry_Night.png",
        "Van_Gogh_Self-Portrait_1887.jpg",
        "Wheat_Field_with_Cypresses.jpg",
        "article.md",
    ]
    for path in ("/images/orig/signature.svg", "/images/thumb/flag.png", "/images/orig/tiny.png",
                 "/images/thumb/sunflowers-again.jpg", "/images/orig/self-portrait.jpg"):
        assert wiki.counts[path] == 0, path  # dropped before download; thumbnails preferred
    assert wiki.api_counts["images--3001@3001%7CTiny_bullet.png"] == 1  # continuation followed

    records = {r["path"]: r for r in manifest_lines(tmp_path)}
    art = records["Vincent_van_Gogh/article.md"]
    assert art["kind"] == "article" and art["title"] == "Vincent van Gogh"
    assert art["url"] == wiki.base + "/wiki/Vincent_van_Gogh"
    assert (art["page_id"], art["revision_id"], art["lang"]) == (3001, 111, "en")
    assert art["fetched_at"].endswith("+00:00")
    starry = records["Vincent_van_Gogh/The_Starry_Night.png"]
    assert starry["kind"] == "image" and starry["mime"] == "image/png"
    assert (starry["width"], starry["height"]) == (320, 256)
    assert starry["title"] == "Vincent van Gogh" and starry["url"] == art["url"]
    assert starry["caption"] == "The Starry Night, June 1889, oil on canvas"
    assert starry["license"] == "CC BY-SA 4.0" and starry["license_url"].startswith("https://creativecommons.org")
    assert starry["artist"] == "Jane Doe (photograph)" and starry["credit"] == "Own work"
    assert "Jane Doe" in starry["attribution"] and "CC BY-SA 4.0" in starry["attribution"]
    assert starry["source_url"] == wiki.base + "/images/thumb/starry.jpg"
    assert starry["description_url"] == wiki.base + "/wiki/File:The_Starry_Night.jpg"
    assert starry["file_name"] == "The Starry Night.jpg"
    data = (tmp_path / starry["path"]).read_bytes()
    assert starry["bytes"] == len(data)
    assert starry["sha256"] == hashlib.sha256(data).hexdigest()
    assert any("The Starry Night.jpg: the wiki says image/jpeg, the bytes are PNG" in n for n in article.notes)
    portrait = records["Vincent_van_Gogh/Van_Gogh_Self-Portrait_1887.jpg"]
    assert portrait["also_as"] == ["File:Sunflowers copy.jpg"]
    # the contract reader agrees
    assert len(read_manifest(tmp_path)) == 4
    assert not list(tmp_path.rglob("*.part"))
    assert any(ua.startswith("rag/0.1.0 (+http") for ua in wiki.user_agents)


def test_hostile_images_refused_or_reported(wiki: StandIn, tmp_path: Path) -> None:
    report = run(wiki, ["San Francisco"], tmp_path)
    article = report.articles[0]
    assert article.status == "partial" and report.exit_code == 0
    images = by_name(article)
    assert images["Golden Gate Bridge.jpg"].status == "saved"
    assert images["Painted Ladies.jpg"].status == "saved"  # a redirect on the wiki's own host is fine
    error_page = images["Cable car error.jpg"]
    assert error_page.status == "failed" and "HTML page" in error_page.reason
    assert "refused" in images["Hotlinked skyline.jpg"].reason
    assert "localhost" in images["Moved Alcatraz.jpg"].reason
    assert "over the cap" in images["Huge panorama.jpg"].reason
    assert wiki.counts["/images/skyline.jpg"] == 0
    assert wiki.counts["/redirect/alcatraz.jpg"] == 1 and wiki.counts["/images/alcatraz.jpg"] == 0
    on_disk = sorted(p.name for p in (tmp_path / "San_Francisco").iterdir())
    assert on_disk == ["Golden_Gate_Bridge.jpg", "Painted_Ladies.jpg", "article.md"]
    records = {r["path"]: r for r in manifest_lines(tmp_path)}
    assert records["San_Francisco/Painted_Ladies.jpg"]["source_url"] == wiki.base + "/images/thumb/painted-ladies.jpg"


def test_disambiguation_missing_and_invalid_titles(wiki: StandIn, tmp_path: Path) -> None:
    report = run(wiki, ["Mercury", "Xyzzy Nonexistent", "../secret", "a\x00b", "Batman"], tmp_path)
    mercury, missing, invalid, control, batman = report.articles
    assert mercury.status == "disambiguation" and mercury.failed
    assert mercury.candidates == ["Mercury (planet)", "Mercury (element)", "Mercury (mythology)"]
    assert "disambiguation" in mercury.error
    assert missing.status == "missing" and "Xyzzy Nonexistent" in missing.error
    assert missing.candidates == ["xyzzy nonexistant", "Xyzzy (computing)", "Colossal Cave Adventure"]
    assert invalid.status == "invalid" and "relative path" in invalid.error
    assert control.status == "invalid" and wiki.api_counts["resolve--a%00b"] == 0  # refused before asking
    assert batman.status == "fetched"
    assert report.exit_code == 1 and len(report.failed) == 4
    data = report.to_dict()
    assert data["totals"]["failed"] == 4 and data["articles"][0]["candidates"][0] == "Mercury (planet)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Batman", MANIFEST_NAME]


def test_hostile_title_from_the_server_stays_inside_out(wiki: StandIn, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run(wiki, ["../../etc/passwd"], out)
    article = report.articles[0]
    assert article.status == "fetched", article.to_dict()
    folder = (out / article.folder).resolve()
    assert folder.parent == out.resolve()
    assert "/" not in article.folder and not article.folder.startswith(".")
    assert (folder / "article.md").read_text(encoding="utf-8").startswith("# ../../etc/passwd\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_slash_and_control_characters_in_a_server_title(wiki: StandIn, tmp_path: Path) -> None:
    evil = "a/b\x07c\u202e/.."
    wiki.routes["resolve--Evil"] = json.dumps(
        {"query": {"redirects": [{"from": "Evil", "to": evil}], "pages": {"3009": {"pageid": 3009, "title": evil}}}}
    )
    page = {"pageid": 3009, "title": evil, "lastrevid": 9, "fullurl": wiki.base + "/wiki/x"}
    wiki.routes["resolve--" + _slug(evil)] = json.dumps({"query": {"pages": {"3009": page}}})
    wiki.routes["info--3009"] = json.dumps({"query": {"pages": [page]}})
    content = {**page, "extract": "Text.", "revisions": [{"revid": 9, "parentid": 8}]}
    wiki.routes["content--" + _slug(evil)] = json.dumps({"query": {"pages": {"3009": content}}})
    wiki.routes["images--3009"] = json.dumps({"batchcomplete": True})
    for _ in range(2):  # the second run finds its own folder again
        report = run(wiki, ["Evil"], tmp_path)
        article = report.articles[0]
        assert article.status == "fetched" and article.title == evil
        assert article.folder.startswith("a_b_c-") and "/" not in article.folder
    assert (tmp_path / article.folder / "article.md").read_text(encoding="utf-8") == "# a/b c /..\n\nText.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [article.folder, MANIFEST_NAME]


def test_symlinked_article_folder_is_refused(wiki: StandIn, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "Batman").symlink_to(elsewhere, target_is_directory=True)
    report = run(wiki, ["Batman"], out)
    assert report.articles[0].status == "error" and "link" in report.articles[0].error
    assert list(elsewhere.iterdir()) == []


def test_redirected_title_and_same_page_twice(wiki: StandIn, tmp_path: Path) -> None:
    report = run(wiki, ["The Batman", "Batman"], tmp_path)
    first, second = report.articles
    assert first.title == "Batman" and first.status == "fetched"
    assert second.status == "duplicate" and not second.failed
    assert wiki.api_counts["content--Batman"] == 1
    assert by_name(first)["DC Comics logo.png"].status == "dropped"
    assert wiki.counts["/images/orig/batman-cosplay.jpg"] == 1


def test_429_then_success_honours_retry_after(wiki: StandIn, tmp_path: Path) -> None:
    wiki.plans[API_PATH].append(("status", 429, {"Retry-After": "7"}))
    wiki.plans["/images/orig/batman-cosplay.jpg"].append(("status", 503, {}))
    fake = FakeTime()
    report = run(wiki, ["Batman"], tmp_path, fake=fake)
    article = report.articles[0]
    assert article.status == "fetched"
    assert fake.sleeps == [7.0, 0.5]  # Retry-After honoured; then the first backoff step
    assert any("HTTP 429" in note for note in article.notes)
    assert any("HTTP 503" in note for note in article.notes)


def test_429_with_too_long_retry_after_gives_up(wiki: StandIn, tmp_path: Path) -> None:
    for _ in range(3):
        wiki.plans[API_PATH].append(("status", 429, {"Retry-After": "3600"}))
    report = run(wiki, ["Batman"], tmp_path)
    assert report.articles[0].status == "error"
    assert "3600" in report.articles[0].error
    assert wiki.counts[API_PATH] == 1


def test_timeout_then_success_and_timeout_then_failure(wiki: StandIn, tmp_path: Path) -> None:
    policy = HttpPolicy(min_interval=0, timeout=0.15, retries=1, backoff=0.01, jitter=0)
    wiki.plans["/images/thumb/golden-gate.jpg"].append(("delay", 0.5))
    wiki.plans["/images/thumb/painted-ladies.jpg"].extend([("delay", 0.5), ("delay", 0.5)])
    fake = FakeTime()
    started = time.monotonic()
    report = run(wiki, ["San Francisco"], tmp_path, fake=fake, policy=policy)
    assert time.monotonic() - started < 3
    images = by_name(report.articles[0])
    assert images["Golden Gate Bridge.jpg"].status == "saved"
    assert wiki.counts["/images/thumb/golden-gate.jpg"] == 2
    failed = images["Painted Ladies.jpg"]
    assert failed.status == "failed" and "timed out" in failed.reason and "2 attempts" in failed.reason
    assert fake.sleeps == [0.01, 0.01]


def test_resume_downloads_nothing_twice(wiki: StandIn, tmp_path: Path) -> None:
    titles = ["Vincent van Gogh", "San Francisco", "The Batman"]
    first = run(wiki, titles, tmp_path)
    image_counts = {p: n for p, n in wiki.counts.items() if p.startswith(("/images/", "/redirect/"))}
    failed_paths = {"/images/thumb/cable-car.jpg", "/images/thumb/huge.jpg", "/redirect/alcatraz.jpg"}
    lines_before = manifest_lines(tmp_path)

    second = run(wiki, titles, tmp_path)
    for path, n in wiki.counts.items():
        if path.startswith(("/images/", "/redirect/")):
            expected = image_counts.get(path, 0) + (1 if path in failed_paths else 0)
            assert n == expected, path  # only the images that failed before are asked for again
    assert wiki.api_counts["content--Vincent_van_Gogh"] == 1  # same revision: text not fetched again
    for article in second.articles:
        assert article.text == "unchanged"
    statuses = {i.file_name: i.status for a in second.articles for i in a.images}
    assert statuses["Van Gogh Self-Portrait 1887.jpg"] == "present"
    assert statuses["Sunflowers copy.jpg"] == "duplicate"  # known copy: no download
    assert first.to_dict()["totals"]["images_saved"] == second.to_dict()["totals"]["images_present"]
    lines_after = manifest_lines(tmp_path)
    assert len(lines_after) == len(lines_before) == len({r["path"] for r in lines_after})

    # A third run with only the images wiped from one article fetches just those again.
    (tmp_path / "Batman" / "Batman_cosplay.jpg").unlink()
    before = wiki.image_requests()
    run(wiki, ["Batman"], tmp_path)
    assert wiki.image_requests() == before + 1


def test_new_revision_refetches_text_only(wiki: StandIn, tmp_path: Path) -> None:
    run(wiki, ["Batman"], tmp_path)
    for key in ("info--3003", "content--Batman"):
        wiki.routes[key] = wiki.routes[key].replace("333", "334")
    images_before = wiki.image_requests()
    report = run(wiki, ["Batman"], tmp_path)
    article = report.articles[0]
    assert article.text == "fetched" and article.revision_id == 334
    assert wiki.api_counts["content--Batman"] == 2 and wiki.image_requests() == images_before
    records = [r for r in manifest_lines(tmp_path) if r["kind"] == "article"]
    assert [r["revision_id"] for r in records] == [334]


def test_image_changed_upstream_is_downloaded_again(wiki: StandIn, tmp_path: Path) -> None:
    run(wiki, ["Batman"], tmp_path)
    wiki.routes["images--3003"] = wiki.routes["images--3003"].replace("ba7ba7ba7", "0ff0ff0ff")
    new_bytes = _jpeg((220, 260), (90, 10, 10))
    wiki.files["/images/orig/batman-cosplay.jpg"] = (new_bytes, "image/jpeg")
    report = run(wiki, ["Batman"], tmp_path)
    assert by_name(report.articles[0])["Batman cosplay.jpg"].status == "saved"
    assert wiki.counts["/images/orig/batman-cosplay.jpg"] == 2
    assert (tmp_path / "Batman" / "Batman_cosplay.jpg").read_bytes() == new_bytes
    assert len([r for r in manifest_lines(tmp_path) if r["kind"] == "image"]) == 1


def test_max_images_and_text_only(wiki: StandIn, tmp_path: Path) -> None:
    report = run(wiki, ["Vincent van Gogh"], tmp_path, max_images=1)
    assert by_name(report.articles[0])["Van Gogh Self-Portrait 1887.jpg"].status == "saved"
    assert report.to_dict()["totals"]["images_saved"] == 1
    report = run(wiki, ["San Francisco"], tmp_path / "text", max_images=0)
    assert report.articles[0].images == [] and wiki.api_counts["images--3002"] == 0


def test_rate_limit_spaces_requests(wiki: StandIn, tmp_path: Path) -> None:
    fake = FakeTime()
    policy = HttpPolicy(min_interval=1.5, timeout=5, retries=0, jitter=0)
    report = run(wiki, ["Batman"], tmp_path, fake=fake, policy=policy)
    assert report.ok
    # resolve, info, content, images, one image: four waits of the full interval (the fake
    # clock only moves when we sleep)
    assert fake.sleeps == [1.5] * (report.requests - 1)


def test_cli_json_and_exit_codes(wiki: StandIn, tmp_path: Path) -> None:
    from rag.cli.fetch import command

    runner = CliRunner()
    env = {"RAG_WIKI_API_URL": wiki.api_url}
    args = ["--out", str(tmp_path), "--min-interval", "0", "--retries", "0", "--quiet"]
    result = runner.invoke(command, ["Batman", "Mercury", "--json", *args], env=env)
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["exit_code"] == 1
    assert [a["status"] for a in data["articles"]] == ["fetched", "disambiguation"]
    assert "Mercury (planet)" in data["articles"][1]["candidates"]

    result = runner.invoke(command, ["Batman", *args], env=env)
    assert result.exit_code == 0, result.output
    assert "ok      Batman -> Batman (text unchanged, rev 333; images: 1 present, 1 dropped)" in result.stdout

    result = runner.invoke(command, ["Mercury", *args], env=env)
    assert result.exit_code == 1
    assert "FAILED  Mercury: disambiguation" in result.stdout and "Mercury (element)" in result.stdout

    result = runner.invoke(command, ["Batman", "--lang", "not a lang!", *args], env=env)
    assert result.exit_code == 1 and "language code" in result.output


# ----------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "title",
    ["../../etc/passwd", "a/b", "..", ".", "", "   ", "a\x00b\x1f\x7f", "con", "NUL.txt", "x" * 400,
     "\u202egnp.exe", "C:\\Windows\\system32", "trailing dot.", "é" * 200, "line\nbreak", "a\u2028b"],
)
def test_safe_name_hostile_titles(title: str, tmp_path: Path) -> None:
    name = safe_name(title)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert not any(ord(ch) < 32 or ord(ch) == 127 or ch in "\u202e\u2028" for ch in name)
    assert not name.endswith((".", " ")) and len(name.encode("utf-8")) <= 100
    assert name.split(".")[0].lower() not in {"con", "nul", "prn", "aux"}
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    (tmp_path / name).mkdir()  # the file system accepts it


def test_safe_name_keeps_plain_titles_and_separates_lossy_ones() -> None:
    assert safe_name("Vincent van Gogh") == "Vincent_van_Gogh"
    assert safe_name("BTS") == "BTS" and safe_name("Tesla Model S") == "Tesla_Model_S"
    assert safe_name("AC/DC") != safe_name("AC DC") and safe_name("AC/DC").startswith("AC_DC-")
    assert safe_name("x" * 400) != safe_name("x" * 401)


def test_article_markdown_headings() -> None:
    text = article_markdown("T", "Intro.\n\n\n== A ==\nBody a.\n\n\n=== A1 ===\n\n\n== Notes ==\n\n== B ==\nBody b.")
    assert text == "# T\n\nIntro.\n\n## A\n\nBody a.\n\n## B\n\nBody b.\n"
    assert article_markdown("Empty", "") == "# Empty\n"


def test_html_to_text_and_screen_image() -> None:
    assert html_to_text('<a href="x">Jane &amp; John</a><br>Doe') == "Jane & John Doe"
    base = dict(file_title="File:A.jpg", file_name="A.jpg", download_url="u", original_url="u",
                description_url="d", mime="image/jpeg", served_mime="image/jpeg", width=800, height=600, sha1=None, caption="A",
                license=None, license_url=None, artist=None, credit=None, attribution="")
    options = FetchOptions()
    assert screen_image(ImageCandidate(**base), options) is None
    assert "SVG" in screen_image(ImageCandidate(**{**base, "mime": "image/svg+xml"}), options)
    assert "not a photo" in screen_image(ImageCandidate(**{**base, "mime": "video/webm"}), options)
    assert "icon" in screen_image(ImageCandidate(**{**base, "file_name": "Commons-logo.png"}), options)
    assert "too small" in screen_image(ImageCandidate(**{**base, "width": 90}), options)
    assert screen_image(ImageCandidate(**{**base, "file_name": "Flagstaff.jpg"}), FetchOptions(skip_names="")) is None


def test_api_url_resolution() -> None:
    default = Settings()
    assert resolve_api_url(default) == "https://en.wikipedia.org/w/api.php"
    assert resolve_api_url(default, lang="fr") == "https://fr.wikipedia.org/w/api.php"
    custom = Settings(wiki_api_url="https://wiki.example.org/w/api.php")
    assert resolve_api_url(custom, lang="fr") == "https://wiki.example.org/w/api.php"
    assert resolve_api_url(default, api_url="http://127.0.0.1:9/api.php", lang="de") == "http://127.0.0.1:9/api.php"
    assert Settings.from_env({"RAG_WIKI_API_URL": "https://w.example/api.php"}).wiki_api_url == "https://w.example/api.php"
    for bad in ("evil.com/x#", "en.", "EN", "e"):
        with pytest.raises(BadInputError):
            resolve_api_url(default, lang=bad)
    with pytest.raises(BadInputError):
        resolve_api_url(default, api_url="file:///etc/passwd")


def test_hosts_and_url_checks() -> None:
    hosts = wiki_hosts("https://en.wikipedia.org/w/api.php")
    assert hosts == ("en.wikipedia.org:443", "upload.wikimedia.org")
    check_url("https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg", hosts)
    for url in ("https://evil.example/x.jpg", "https://upload.wikimedia.org.evil.example/x.jpg",
                "ftp://upload.wikimedia.org/x.jpg", "https://user:pw@upload.wikimedia.org/x.jpg",
                "https://en.wikipedia.org:8443/x.jpg"):
        with pytest.raises(ForeignHostError):
            check_url(url, hosts)
    assert wiki_hosts("http://127.0.0.1:8080/w/api.php", ["media.example"]) == ("127.0.0.1:8080", "media.example")


def test_retry_after_parsing() -> None:
    from datetime import datetime, timezone

    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_api_errors_and_non_json(wiki: StandIn) -> None:
    client = PoliteSession(HttpPolicy(min_interval=0, retries=0))
    hosts = wiki_hosts(wiki.api_url)
    with pytest.raises(FetchError, match="nofixture"):
        client.get_json(wiki.api_url, {"action": "query", "list": "nothing"}, hosts)
    with pytest.raises(FetchError, match="not JSON"):
        client.get_json(wiki.base + "/images/thumb/cable-car.jpg", {}, hosts)
    with pytest.raises(FetchError, match="HTTP 404"):
        client.download(wiki.base + "/images/nope.jpg", hosts, max_bytes=1000)


def test_the_wikipedia_package_is_left_untouched(wiki: StandIn, tmp_path: Path) -> None:
    import wikipedia.wikipedia as module

    before = {name: getattr(module, name) for name in ("_wiki_request", "API_URL", "USER_AGENT", "search", "summary")}
    report = run(wiki, ["Batman", "Mercury"], tmp_path)
    assert [a.status for a in report.articles] == ["fetched", "disambiguation"]
    after = {name: getattr(module, name) for name in before}
    assert all(after[name] is before[name] for name in before), after
