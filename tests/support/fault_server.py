"""A loopback server that misbehaves the way real endpoints do, one fault per path, at the TCP level.

aiohttp's own server cannot stall mid-body, drip bytes, lie about lengths or speak non-HTTP, so this
one reads the request line itself and writes raw bytes. Used by the hardening tests and bench/soak.py.

    /ok              200, a small body
    /hang            reads the request, never answers
    /stall-body      headers announcing 100 bytes, then nothing
    /drip            headers, then one body byte a second, forever (slowloris in reverse)
    /huge            announces and streams a 2 GB body
    /huge-chunked    streams zeros chunked, with no announced length, until the client leaves
    /redirect-loop   302 to itself, forever
    /redirect-away   302 to `away_url` (another host: credentials must not follow)
    /http10          HTTP/1.0, no length, body delimited by closing the connection
    /garbage         bytes that are not HTTP, echoing the request's header values back
    /reset-mid-body  headers announcing 1,000 bytes, 100 of them, then a TCP reset
    /gzip-bomb       256 MiB of zeros as a 255 KiB gzip body, with its honest (compressed) Content-Length
    /deflate-bomb    the same as a "deflate" (zlib) body
    /gzip-bomb-chunked  the gzip bomb chunked, with no announced length
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Writer = asyncio.StreamWriter
GIB = 1024**3
MIB = 1024**2
BOMB_BYTES = 256 * MIB  # what a compression bomb inflates to


@dataclass
class FaultServer:
    away_url: str = "http://localhost:1/"
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers) as received
    _server: asyncio.Server | None = None
    _writers: set[Writer] = field(default_factory=set)

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FaultServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server:
            self._server.close()
            for writer in list(self._writers):  # Server.close_clients() is Python 3.13+
                writer.transport.abort()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *header_lines = head.decode("latin-1").split("\r\n")
            path = line.split(" ")[1] if line.count(" ") >= 2 else "/"
            headers = dict(h.split(": ", 1) for h in header_lines if ": " in h)
            self.requests.append((path, headers))
            route = asyncio.ensure_future(ROUTES.get(path.split("?")[0], _not_found)(self, writer, headers))
            gone = asyncio.ensure_future(reader.read())  # ends when the client closes: stop serving it then
            await asyncio.wait({route, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in (route, gone):
                task.cancel()
            await asyncio.gather(route, gone, return_exceptions=True)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client left: that is what a deadline does
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


async def _ok(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


async def _not_found(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


async def _hang(*_: object) -> None:
    await asyncio.Event().wait()


async def _stall_body(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    await w.drain()
    await asyncio.Event().wait()


async def _drip(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        w.write(b"1\r\nx\r\n")
        await w.drain()
        await asyncio.sleep(1)


async def _huge(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * GIB))
    chunk = bytes(64 * 1024)
    for _sent in range(2 * GIB // len(chunk)):
        w.write(chunk)
        await w.drain()


async def _huge_chunked(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, bytes(64 * 1024))
    for _sent in range(2 * GIB // (64 * 1024)):
        w.write(chunk)
        await w.drain()


async def _redirect_loop(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 302 Found\r\nLocation: /redirect-loop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


async def _redirect_away(server: FaultServer, w: Writer, __: dict[str, str]) -> None:
    location = server.away_url.encode()
    w.write(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % location)


async def _http10(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, then the connection closes")


async def _garbage(_: FaultServer, w: Writer, headers: dict[str, str]) -> None:
    # Echo what the client sent first, so an error message that quotes the bytes would leak a secret.
    w.write(" ".join(headers.values()).encode() + b"\x00\xff\r\nnot http at all\r\n\r\n")


async def _reset_mid_body(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    await w.drain()
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close → RST, not FIN
    w.transport.abort()


@functools.cache
def compression_bomb(encoding: str) -> bytes:
    """BOMB_BYTES of zeros as a "gzip" or "deflate" (zlib) body of 255 KiB: under the cap, as sent.

    A full flush makes each compressed 4 MiB independent of the one before, so one is compressed and
    repeated (0.3 s instead of 2.5 s for compressing 256 MiB); the checksum still covers every byte.
    """
    zeros = bytes(4 * MIB)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate, framed below
    pieces = BOMB_BYTES // len(zeros)
    raw = (deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)) * pieces + deflater.flush()
    gzip = encoding == "gzip"
    check = 0 if gzip else 1
    for _ in range(pieces):
        check = zlib.crc32(zeros, check) if gzip else zlib.adler32(zeros, check)
    if gzip:
        return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw + struct.pack("<II", check, BOMB_BYTES % 2**32)
    return b"\x78\xda" + raw + struct.pack(">I", check)


async def _bomb(w: Writer, encoding: str, *, chunked: bool = False) -> None:
    body = compression_bomb(encoding)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: %s\r\n%s\r\n\r\n"
            % (encoding.encode(), framing))
    for start in range(0, len(body), 64 * 1024):
        piece = body[start:start + 64 * 1024]
        w.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        await w.drain()
    w.write(b"0\r\n\r\n" if chunked else b"")


async def _gzip_bomb(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    await _bomb(w, "gzip")


async def _deflate_bomb(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    await _bomb(w, "deflate")


async def _gzip_bomb_chunked(_: FaultServer, w: Writer, __: dict[str, str]) -> None:
    await _bomb(w, "gzip", chunked=True)


ROUTES: dict[str, Callable[[FaultServer, Writer, dict[str, str]], Awaitable[None]]] = {
    "/ok": _ok, "/hang": _hang, "/stall-body": _stall_body, "/drip": _drip, "/huge": _huge,
    "/huge-chunked": _huge_chunked, "/redirect-loop": _redirect_loop, "/redirect-away": _redirect_away,
    "/http10": _http10, "/garbage": _garbage, "/reset-mid-body": _reset_mid_body, "/gzip-bomb": _gzip_bomb,
    "/deflate-bomb": _deflate_bomb, "/gzip-bomb-chunked": _gzip_bomb_chunked,
}


async def _serve(port: int) -> None:
    server = await FaultServer(port=port).start()
    server.away_url = f"http://localhost:{server.port}/ok"
    print(f"fault server listening on {server.url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":  # python -m tests.support.fault_server [port]: for the soak benchmark, as its own process
    import sys

    asyncio.run(_serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
