"""HTTP/1.1 on one connection: the request's bytes, and its answer parsed by httptools (llhttp, Node's parser).

Why not aiohttp here: a check is one small request and one small answer, and aiohttp's general request and
response path was most of a pooled check's CPU (5,000 GETs at 256 at once: 0.18-0.21 CPU-ms a request in
aiohttp, 0.065-0.075 in this client; README, "The check client"). The parser is llhttp's; what is left is
what a check needs: one request at a time per connection, caps on the head and the decoded body, and an
answer that says whether the connection may be used again.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

MAX_BODY_BYTES = 256 * 1024  # a health answer is small; a bigger body is refused, not buffered
MAX_HEAD_BYTES = 64 * 1024  # the status line and headers together (aiohttp's limit was 8 KiB per line)
MAX_HEADERS = 128
MAX_WIRE_BYTES = MAX_HEAD_BYTES + 8 * MAX_BODY_BYTES  # an answer's bytes as sent (chunking, trailers, empty
# deflate blocks): no true health answer comes near it, and a hostile one may not grow memory or CPU without end
MAX_INTERIM = 8  # 100 Continue and the like before the answer: a server that sends them without end is refused
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: a method or a header name
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")  # a line break in a value would start a header of the caller's choosing
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")  # the target ends at a space; a line break would end the line
# The request's framing and routing are the client's alone: a check that set Content-Length or
# Transfer-Encoding on a body-less GET would make the server read the next request on that pooled
# connection (another tenant's, with its credential) as this one's body.
FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
                     "trailer", "expect", "proxy-authorization", "proxy-connection"})


class BodyTooLarge(Exception):
    pass


class ProtocolError(Exception):
    """What answered is not HTTP/1.x (or breaks its limits): nothing could sync over it. The message never
    quotes the bytes received."""


class ServerDisconnected(ConnectionError):
    """The connection closed before any byte of the answer: on a reused connection, a request may be retried."""


class PayloadError(ConnectionError):
    """The connection closed in the middle of the answer's body."""


class InvalidRequest(ValueError):
    """A request this client will not put on the wire (a line break in a header value, say); the message
    names the header, never its value (a credential, often)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    keep_alive: bool


def request_bytes(method: str, target: str, headers: CIMultiDict[str], body: bytes) -> bytes:
    """The request's head and body as sent; refuses a method, header name or value that could split it."""
    if not _TOKEN.match(method):
        raise InvalidRequest("the request method is not an HTTP token")
    if not target.startswith("/") or _UNSAFE_TARGET.search(target):
        raise InvalidRequest("the request target is not an encoded path")
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise InvalidRequest(f"header name {name!r} is not an HTTP token")
        if _UNSAFE_VALUE.search(value):
            raise InvalidRequest(f"the value of header {name} contains a line break or NUL")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def decoder(encoding: str) -> Callable[[bytes, int], bytes]:
    """Decode a body piece by piece, each call returning at most `limit` bytes; ValueError for other codings."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda data, limit: data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ValueError("content encoding other than gzip or deflate")  # not echoed: the server chose it
    inflater: Any = None

    def decode(data: bytes, limit: int) -> bytes:
        nonlocal inflater
        if inflater is None:  # "deflate" should be zlib-wrapped; some servers send it raw, as browsers accept
            raw = encoding == "deflate" and data[0] & 0x0F != zlib.DEFLATED
            inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS | 32)  # 32: gzip or zlib header
        try:
            return inflater.decompress(data, limit)  # the rest waits in unconsumed_tail: over the cap, refused
        except zlib.error:
            raise ValueError(f"the {encoding} body does not decode") from None

    return decode


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one exchange at a time (no pipelining). Bytes that arrive while no exchange
    waits for them (a body after a HEAD's answer, say) make it unusable: it is never handed out again."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.usable = True
        self.tls = False  # set by the client: a TLS connection is never closed politely (see finish)
        self.generation = 0  # set by the client: the egress policy it was opened under
        self.tls_expires_at: Any = None  # set by the client when the TLS handshake is done
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._parser: Any = None
        self._head, self._read_body, self._head_bytes, self._wire_bytes = False, True, 0, 0
        self._status, self._interim, self._interims, self._until_eof = 0, False, 0, False
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size, self._decode, self._error = 0, decoder(""), None

    # -- the client's side ------------------------------------------------------------------------------------------

    async def exchange(self, request: bytes, *, head: bool, read_body: bool) -> Answer:
        """Send `request` and wait for its answer: its whole (decoded, capped) body, or only its head when
        `read_body` is false or it answers a HEAD (the connection is then not reused unless the answer ended)."""
        assert self._waiter is None
        self._status = 0  # `answering` speaks of this exchange from here on
        if not self.usable or self.transport is None or self.transport.is_closing():
            raise ServerDisconnected("the connection closed before the request")  # e.g. a server that spoke first
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._parser = parser = httptools.HttpResponseParser(self)
        # As lenient as aiohttp's parser was (folded or bare-LF header lines, a space after a chunk size), so a
        # server that answered before still does; duplicate lengths and a length beside chunking stay refused.
        parser.set_dangerous_leniencies(lenient_headers=True, lenient_optional_cr_before_lf=True,
                                        lenient_spaces_after_chunk_size=True)
        self._head, self._read_body, self._head_bytes, self._wire_bytes = head, read_body, 0, 0
        self._status, self._interim, self._interims, self._until_eof = 0, False, 0, False
        self._headers, self._body, self._size, self._decode, self._error = [], [], 0, decoder(""), None
        self.transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        """Close at once (no lingering: an unread body or a half-sent request has no further use)."""
        self.usable = False
        if self.transport is not None:
            self.transport.abort()

    @property
    def answering(self) -> bool:
        """Whether the current answer's status line has been read (a failure before it may be a stale pool's)."""
        return self._status != 0

    def finish(self) -> None:
        """Close after a whole exchange: politely over TCP (FIN, not a reset: the server did nothing wrong), at
        once over TLS, whose polite close waits up to 30 s for the server's close_notify, a socket outside the
        client's bound that a silent server could multiply."""
        self.usable = False
        if self.transport is not None:
            self.transport.abort() if self.tls else self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._waiter is None or self._waiter.done():
            return
        if self._parser is not None and self._status and self._until_eof and not self._interim:
            self._answer(keep_alive=False)  # the body ran until the connection closed (no length, not chunked)
        elif self._status and not self._interim:
            self._fail(PayloadError("the connection closed in the middle of the answer"))
        else:
            self._fail(ServerDisconnected("the connection closed before an answer"))

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # unasked-for bytes: the connection is out of step, drop it
            self.close()
            return
        self._wire_bytes += len(data)
        if self._wire_bytes > MAX_WIRE_BYTES:
            self._fail(ProtocolError(f"the answer is larger than {MAX_WIRE_BYTES // 1024} KiB as sent"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            self._fail(self._error or ProtocolError("not a valid HTTP response"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
            return
        except httptools.HttpParserError:
            self._fail(ProtocolError("not a valid HTTP response"))
            return
        if not self._status:  # the parser holds an unfinished head: it may not grow without bound
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(ProtocolError(f"the answer's head is larger than {MAX_HEAD_BYTES // 1024} KiB"))

    # -- httptools callbacks -----------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():  # a second answer to one request: out of step, dropped
            self.usable = False
            self._error = ProtocolError("more answers than requests")
            raise self._error

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= MAX_HEADERS:
            self._error = ProtocolError(f"more than {MAX_HEADERS} headers")
            raise self._error
        self._headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._interim = 100 <= status < 200
        if self._interim:  # 100 Continue and the like: the real answer follows on the same connection
            self._interims += 1
            if self._interims > MAX_INTERIM:
                self._error = ProtocolError(f"more than {MAX_INTERIM} interim answers")
                raise self._error
            self._headers = []  # their bytes still count toward the head's cap
            return
        self._status = status
        fields = {name.lower(): value for name, value in self._headers}
        length, coding = fields.get("content-length", "").strip(), fields.get("transfer-encoding", "")
        no_body = self._head or status in (204, 304) or length == "0"
        chunked = coding.rsplit(",", 1)[-1].strip().lower() == "chunked"
        self._until_eof = not no_body and not length and not chunked  # RFC 9112 6.3: the body runs to the close
        if no_body or not self._read_body:
            # A HEAD's answer has no body, whatever Content-Length says; a body someone sends anyway arrives
            # after the answer and closes the connection. Without read_body, the unread body does the same.
            keep_alive = no_body and self._persistent(fields.get("connection", ""))
            self._answer(keep_alive=keep_alive)
            if not keep_alive:
                self.close()
            return
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._error = BodyTooLarge(f"response body larger than {MAX_BODY_BYTES // 1024} KiB")
            raise self._error
        encoding = next((v for n, v in reversed(self._headers) if n.lower() == "content-encoding"), "identity")
        try:
            self._decode = decoder(encoding)
        except ValueError as exc:
            self._error = exc
            raise

    def on_body(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.usable = False  # a body after an answer that had none: never reused
            return
        try:
            chunk = self._decode(data, MAX_BODY_BYTES + 1 - self._size)
        except ValueError as exc:
            self._error = exc
            raise
        if not chunk:
            return
        self._size += len(chunk)
        if self._size > MAX_BODY_BYTES:
            self._error = BodyTooLarge(f"response body larger than {MAX_BODY_BYTES // 1024} KiB")
            raise self._error
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._waiter is not None and not self._waiter.done():
            self._answer(keep_alive=self._parser.should_keep_alive())

    def _persistent(self, connection: str) -> bool:
        """RFC 9112 9.3, for an answer without a body (llhttp's should_keep_alive also wants its length)."""
        tokens = {t.strip().lower() for t in connection.split(",")}
        if self._parser.get_http_version() == "1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    # -- outcomes ------------------------------------------------------------------------------------------------------

    def _answer(self, *, keep_alive: bool) -> None:
        if not keep_alive:
            self.usable = False
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        assert self._waiter is not None
        self._waiter.set_result(Answer(self._status, CIMultiDictProxy(CIMultiDict(self._headers)), body, keep_alive))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()
