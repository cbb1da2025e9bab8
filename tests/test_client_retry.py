"""RagClient tries a busy (503) or over-share (429) request again, as the server's Retry-After says,
and checks certificates for https servers only."""

from __future__ import annotations

import httpx
import pytest

from rag.client import MAX_RETRY_WAIT, RagClient, retry_wait
from rag.errors import RagError


@pytest.mark.parametrize("status, header, attempt, expected", [
    (429, "1", 0, 1.0),
    (503, "3", 1, 3.0),
    (503, None, 0, 1.0),            # no Retry-After: one second
    (429, "soon", 0, 1.0),          # unreadable: one second
    (429, "600", 0, MAX_RETRY_WAIT),  # capped
    (429, "-4", 0, 0.0),
    (429, "1", 2, None),            # retries used up
    (500, "1", 0, None),            # other errors are not retried
    (404, None, 0, None),
])
def test_retry_wait(status, header, attempt, expected):
    assert retry_wait(status, header, attempt, retries=2) == expected


def client_answering(replies):
    """A RagClient whose server answers the given (status, headers, json) replies in turn."""
    seen = []

    def handler(request):
        seen.append(request.url.path)
        status, headers, body = replies[min(len(seen), len(replies)) - 1]
        return httpx.Response(status, headers=headers, json=body)

    slept = []
    client = RagClient("http://127.0.0.1:9", sleep=slept.append)
    client._http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(handler))
    return client, seen, slept


def test_a_refused_request_is_tried_again_after_retry_after_and_then_succeeds():
    client, seen, slept = client_answering([
        (429, {"Retry-After": "1"}, {"error": "too many requests from this client"}),
        (503, {"Retry-After": "2"}, {"error": "the server is busy"}),
        (200, {}, {"collections": {"text": {"points": 3}}, "server": {"pid": 1}}),
    ])
    assert client.info() == {"collections": {"text": {"points": 3}}}
    assert seen == ["/api/info"] * 3
    assert slept == [1.0, 2.0]


def test_the_client_gives_up_after_its_retries_with_the_servers_message():
    client, seen, slept = client_answering([(503, {"Retry-After": "1"}, {"error": "the server is busy: try again"})])
    with pytest.raises(RagError) as err:
        client.info()
    assert str(err.value) == "the server is busy: try again (HTTP 503 from http://127.0.0.1:9)"
    assert len(seen) == 3 and slept == [1.0, 1.0]


def test_other_errors_are_not_retried():
    client, seen, slept = client_answering([(400, {}, {"error": "q: too long"})])
    with pytest.raises(RagError, match=r"^q: too long \(HTTP 400"):
        client.info()
    assert len(seen) == 1 and slept == []


def test_a_stream_refused_once_is_tried_again():
    replies = [(429, {"Retry-After": "0"}, {"error": "too many requests"})]
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(replies[0][0], headers=replies[0][1], json=replies[0][2])
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=b'event: token\ndata: "hi"\n\n')

    slept = []
    client = RagClient("http://127.0.0.1:9", sleep=slept.append)
    client._http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(handler))
    events, close = client._events("POST", "/api/ask", json={"question": "q"})
    assert list(events) == [("token", "hi")]
    close()
    assert len(calls) == 2 and slept == [0.0]


def test_certificates_are_loaded_and_checked_for_https_servers_only():
    """An https server's certificate is verified; a plain-http one (the loopback default) loads none."""
    import ssl

    def verify_mode(url):
        client = RagClient(url)
        try:
            return client._http._transport._pool._ssl_context.verify_mode
        finally:
            client.close()

    assert verify_mode("https://rag.example:8765") == ssl.CERT_REQUIRED
    assert verify_mode("HTTPS://rag.example:8765") == ssl.CERT_REQUIRED
    assert verify_mode("http://127.0.0.1:8765") == ssl.CERT_NONE
