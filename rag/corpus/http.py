"""One polite HTTP session for talking to a MediaWiki site and its upload host.

Everything the Wikipedia fetcher sends goes through `PoliteSession`:

* a descriptive User-Agent (project, version, contact URL), as the Wikimedia
  User-Agent policy asks;
* a minimum interval between requests (serial requests, never parallel);
* retries with exponential backoff on timeouts, connection errors, HTTP 429
  (its Retry-After is honoured) and 5xx, and on the API's own `maxlag` and
  `ratelimited` errors;
* a per-request timeout;
* downloads that never leave the allowed hosts: redirects are followed by hand and
  every hop is checked, bodies are streamed and abandoned past a byte cap (API answers
  too) or past a total time cap (a server trickling bytes never holds a fetch for long).

The clock and the sleep function are injectable so that tests run in milliseconds.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Optional
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from rag import __version__
from rag.errors import RagError

# Replace with the project's public home once it has one; `contact=` overrides it per session.
PROJECT_URL = "https://github.com/rag-project/rag"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IMAGE_ACCEPT = "image/jpeg, image/png, image/webp, image/gif, image/tiff;q=0.9, */*;q=0.5"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# MediaWiki API error codes that mean "come back later" rather than "you asked wrong".
RETRY_API_ERRORS = frozenset({"maxlag", "ratelimited", "readonly"})
# Domains served by the Wikimedia Foundation, whose media live on upload.wikimedia.org.
WIKIMEDIA_DOMAINS = (
    "wikipedia.org",
    "wikimedia.org",
    "wiktionary.org",
    "wikibooks.org",
    "wikinews.org",
    "wikiquote.org",
    "wikisource.org",
    "wikiversity.org",
    "wikivoyage.org",
    "wikidata.org",
    "mediawiki.org",
)
WIKIMEDIA_UPLOAD_HOST = "upload.wikimedia.org"


class FetchError(RagError):
    """A request failed for good (after retries, or with an error that retrying cannot fix)."""


class ForeignHostError(FetchError):
    """A URL (or a redirect hop) points outside the hosts this fetch may contact."""


class TooLargeError(FetchError):
    """A response body is over the byte cap."""


class TooSlowError(FetchError):
    """A response took longer than the total time cap (a trickling server); not retried."""


class ApiError(FetchError):
    """The MediaWiki API answered with an `error` object."""

    def __init__(self, code: str, info: str, url: str) -> None:
        super().__init__(f"{url}: API error {code}: {info}")
        self.code = code
        self.info = info


def user_agent(contact: Optional[str] = None) -> str:
    """The User-Agent sent with every request: project/version (contact) library/version."""
    return (
        f"rag/{__version__} (+{contact or PROJECT_URL}; multimodal RAG corpus fetcher) "
        f"python-requests/{requests.__version__}"
    )


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return host, port


def wiki_hosts(api_url: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Hosts a fetch from `api_url` may contact: the API host, its upload host, and `extra`.

    Entries are "host" (any port) or "host:port". Wikimedia wikis add upload.wikimedia.org.
    """
    host, port = _host_port(api_url)
    if not host:
        raise ValueError(f"not an absolute URL: {api_url!r} (expected e.g. https://en.wikipedia.org/w/api.php)")
    hosts = [f"{host}:{port}"]
    if any(host == d or host.endswith("." + d) for d in WIKIMEDIA_DOMAINS):
        hosts.append(WIKIMEDIA_UPLOAD_HOST)
    hosts.extend(h.strip().lower() for h in extra if h.strip())
    return tuple(dict.fromkeys(hosts))


def check_url(url: str, allowed_hosts: Iterable[str], schemes: Iterable[str] = ("http", "https")) -> None:
    """Raise ForeignHostError unless `url` is http(s) on one of `allowed_hosts`."""
    try:
        parts = urlsplit(url)
        host, port = _host_port(url)
    except ValueError as exc:
        raise ForeignHostError(f"refused {url!r}: not a valid URL ({exc})") from None
    schemes = tuple(schemes)
    if parts.scheme not in schemes:
        raise ForeignHostError(f"refused {url!r}: scheme {parts.scheme or '(none)'!r} is not {' or '.join(schemes)}")
    if parts.username or parts.password:
        raise ForeignHostError(f"refused {url!r}: URLs with credentials are not followed")
    for entry in allowed_hosts:
        name, _, want_port = entry.partition(":")
        if name == host and (not want_port or want_port == str(port)):
            return
    raise ForeignHostError(
        f"refused {url!r}: host {host}:{port} is not one of the wiki's hosts "
        f"({', '.join(allowed_hosts)}); allow it explicitly to fetch from it"
    )


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class HttpPolicy:
    """How politely and how persistently to talk to the server."""

    min_interval: float = 0.2  # seconds between the starts of two requests
    timeout: float = 30.0  # seconds, per connect and per read
    retries: int = 4  # extra attempts after the first
    backoff: float = 1.0  # first backoff delay; doubles on each attempt
    max_backoff: float = 60.0
    max_retry_after: float = 300.0  # a server asking for a longer wait makes us give up
    jitter: float = 0.1  # +- fraction added to backoff delays
    max_redirects: int = 5
    max_time: float = 120.0  # seconds for one whole request, body included
    max_api_bytes: int = 32 * 1024 * 1024  # an API answer larger than this is abandoned


@dataclass
class Download:
    """A completed download: the bytes and where they really came from."""

    url: str
    final_url: str
    content: bytes
    content_type: str
    redirects: list[str] = field(default_factory=list)


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class _Answer:
    status: int
    url: str
    headers: Mapping[str, str]
    content: bytes = b""
    location: Optional[str] = None


class PoliteSession:
    """A requests session with a User-Agent, a rate limit, retries and a timeout.

    `clock` and `sleep` default to `time.monotonic` and `time.sleep`; tests inject fakes.
    `on_retry(message)` is told about every retry (the fetcher logs them in its report).
    """

    def __init__(
        self,
        policy: Optional[HttpPolicy] = None,
        *,
        contact: Optional[str] = None,
        session: Optional[requests.Session] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.policy = policy or HttpPolicy()
        self.user_agent = user_agent(contact)
        self._session = session or requests.Session()
        self._clock = clock
        self._sleep = sleep
        self._last_start: Optional[float] = None
        self.on_retry = on_retry
        self.requests_sent = 0

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "PoliteSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- public calls -------------------------------------------------------------

    def get_json(self, url: str, params: Mapping[str, Any], allowed_hosts: Iterable[str]) -> dict[str, Any]:
        """GET an API URL and return its JSON object; API `error` objects raise ApiError."""
        allowed = tuple(allowed_hosts)

        def parse(answer: _Answer) -> dict[str, Any]:
            if not answer.content.strip():
                raise FetchError(f"{url}: the answer is empty, not JSON; is this an api.php URL?")
            try:
                data = json.loads(answer.content.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                head = answer.content[:80].decode("utf-8", "replace")
                raise FetchError(f"{url}: the answer is not JSON (starts with {head!r}); is this an api.php URL?") from None
            except RecursionError:
                raise FetchError(f"{url}: the JSON answer is nested too deeply to read") from None
            if not isinstance(data, dict):
                raise FetchError(f"{url}: expected a JSON object, got {type(data).__name__}")
            error = data.get("error")
            if isinstance(error, dict):
                code = str(error.get("code", "unknown"))
                info = str(error.get("info", ""))
                if code in RETRY_API_ERRORS:
                    raise _Retry(f"API error {code}: {info}", parse_retry_after(answer.headers.get("Retry-After")))
                raise ApiError(code, info, url)
            return data

        max_bytes = self.policy.max_api_bytes
        return self._get(url, dict(params), allowed, max_bytes=max_bytes, accept="application/json", parse=parse)[0]

    def download(
        self, url: str, allowed_hosts: Iterable[str], *, max_bytes: int, schemes: Iterable[str] = ("http", "https")
    ) -> Download:
        """Download `url` (streamed, capped at `max_bytes`) without ever leaving `allowed_hosts`."""
        allowed = tuple(allowed_hosts)
        data, answer, hops = self._get(url, None, allowed, max_bytes=max_bytes, accept=IMAGE_ACCEPT, schemes=tuple(schemes))
        return Download(
            url=url,
            final_url=answer.url,
            content=data,
            content_type=answer.headers.get("Content-Type", ""),
            redirects=hops,
        )

    # -- machinery ------------------------------------------------------------------

    def _get(
        self,
        url: str,
        params: Optional[dict[str, Any]],
        allowed: tuple[str, ...],
        *,
        max_bytes: Optional[int],
        accept: str,
        parse: Optional[Callable[[_Answer], Any]] = None,
        schemes: tuple[str, ...] = ("http", "https"),
    ) -> tuple[Any, _Answer, list[str]]:
        hops: list[str] = []
        current = url
        for _ in range(self.policy.max_redirects + 1):
            check_url(current, allowed, schemes)
            answer, result = self._with_retries(
                current, lambda: self._once(current, params, max_bytes, accept, parse)
            )
            if answer.location is None:
                if answer.status != 200:
                    raise FetchError(f"{current}: HTTP {answer.status}")
                return (result if parse else answer.content), answer, hops
            hops.append(answer.location)
            current = answer.location
            params = None  # the Location already carries the query string
        raise FetchError(f"{url}: more than {self.policy.max_redirects} redirects")

    def _with_retries(self, url: str, attempt: Callable[[], tuple[_Answer, Any]]) -> tuple[_Answer, Any]:
        policy = self.policy
        for number in range(policy.retries + 1):
            try:
                return attempt()
            except _Retry as exc:
                if number >= policy.retries:
                    raise FetchError(
                        f"{url}: {exc.reason} (gave up after {number + 1} attempt{'s' if number else ''})"
                    ) from None
                if exc.retry_after is not None:
                    delay = exc.retry_after
                    if delay > policy.max_retry_after:
                        raise FetchError(
                            f"{url}: {exc.reason}; the server asks to wait {delay:.0f} s, "
                            f"more than the {policy.max_retry_after:.0f} s we are willing to wait"
                        ) from None
                else:
                    delay = min(policy.max_backoff, policy.backoff * (2**number))
                    if policy.jitter:
                        delay *= 1 + random.uniform(-policy.jitter, policy.jitter)
                if self.on_retry:
                    self.on_retry(f"{url}: {exc.reason}; retry {number + 1}/{policy.retries} in {delay:.2f} s")
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _throttle(self) -> None:
        if self._last_start is not None and self.policy.min_interval > 0:
            wait = self._last_start + self.policy.min_interval - self._clock()
            if wait > 0:
                self._sleep(wait)
        self._last_start = self._clock()

    def _once(
        self,
        url: str,
        params: Optional[dict[str, Any]],
        max_bytes: Optional[int],
        accept: str,
        parse: Optional[Callable[[_Answer], Any]],
    ) -> tuple[_Answer, Any]:
        self._throttle()
        self.requests_sent += 1
        deadline = time.monotonic() + self.policy.max_time
        headers = {"User-Agent": self.user_agent, "Accept": accept}
        try:
            response = self._session.get(
                url,
                params=params,
                headers=headers,
                timeout=self.policy.timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            raise _Retry(f"timed out after {self.policy.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise _Retry(f"connection failed ({_short(exc)})") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, ValueError) as exc:
            raise FetchError(f"{url}: not a valid URL, or redirects to one ({_short(exc)})") from None
        with response:
            status = response.status_code
            if status in RETRY_STATUSES:
                raise _Retry(f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After")))
            if status in REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise FetchError(f"{url}: HTTP {status} redirect without a Location header")
                return _Answer(status, response.url, response.headers, location=urljoin(response.url, location)), None
            if status != 200:
                raise FetchError(f"{url}: HTTP {status} {response.reason or ''}".rstrip())
            declared = response.headers.get("Content-Length", "")
            if max_bytes is not None and declared.isdigit() and int(declared) > max_bytes:
                raise TooLargeError(f"{url}: {int(declared):,} bytes is over the cap of {max_bytes:,}")
            content = self._read_body(response, url, max_bytes, deadline)
            answer = _Answer(status, response.url, response.headers, content=content)
        return answer, (parse(answer) if parse else None)


    def _read_body(self, response: requests.Response, url: str, max_bytes: Optional[int], deadline: float) -> bytes:
        """The body, read as it arrives (one socket read at a time) within the byte and time caps."""
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = response.raw.read1(65536, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise TooLargeError(f"{url}: more than {max_bytes:,} bytes; download abandoned")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TooSlowError(
                        f"{url}: still sending after {self.policy.max_time:g} s ({size:,} bytes so far); "
                        "download abandoned"
                    )
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise _Retry(f"timed out reading the body after {self.policy.timeout:g} s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError) as exc:
            raise _Retry(f"connection broke while reading ({_short(exc)})") from None
        return b"".join(chunks)


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text if len(text) <= 160 else text[:157] + "..."
