"""PostgreSQL protocol v3 over asyncio streams, for the fault matrix: message builders, a client connection that
reports exactly how far a request got, and a JSON-RPC client for the agent's control socket.

Standard library only; the message builders come from Tests/Fuzz/pgwire.py.
"""
import asyncio
import json
import os
import socket
import struct
import sys

# The message builders and the field and row readers are the fuzzer's (Tests/Fuzz/pgwire.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fuzz"))
from pgwire import (  # noqa: E402,F401 - re-exported for the harness
    CANCEL_CODE, PROTOCOL_3, bind, copy_data, copy_done, cstr, data_row, describe, execute, fields, message, parse,
    query, startup, sync, terminate,
)


def cancel_request(pid, secret):
    return struct.pack("!iiii", 16, CANCEL_CODE, pid, secret)


class Lost(Exception):
    """The connection ended (or stopped answering) before the answer was complete."""


class Anomaly(Exception):
    """A message that PostgreSQL would not have sent at this point."""


class ServerError(Exception):
    """An ErrorResponse, from PostgreSQL or from the agent."""

    def __init__(self, error):
        self.error = error
        self.sqlstate = error.get("C", "")
        self.severity = error.get("V", error.get("S", ""))
        self.text = error.get("M", "")
        super().__init__(f"{self.severity} {self.sqlstate} {self.text}")

    @property
    def fatal(self):
        return self.severity in ("FATAL", "PANIC")


def never_ran(error):
    """True when an error proves that the statement it answers did not commit anything: a plain ERROR from
    PostgreSQL (the transaction is rolled back), or one of the agent's answers that it sends only before any
    server got the request (no server within wait_timeout, upstream unreachable, too many clients).

    Connection-class errors and terminations (08xxx, 57P0x, any FATAL) prove nothing: the statement may have
    committed before the connection went away."""
    if not isinstance(error, ServerError):
        return False
    if error.sqlstate == "53300":
        return True
    if error.sqlstate == "08006" and error.text.startswith("cannot connect to the upstream"):
        return True
    if error.fatal or error.sqlstate.startswith("08") or error.sqlstate.startswith("57P"):
        return False
    return True


class Result:
    def __init__(self):
        self.rows = []
        self.tags = []
        self.error = None
        self.status = None
        self.copy_in = False


class Conn:
    """One client connection. Every read raises Lost when the stream ends, Anomaly on a message out of place."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.key = None
        self.status = b"I"
        self.parameters = {}
        self.closed = False

    @classmethod
    async def open(cls, host, port, user, database, timeout=15.0, rcvbuf=None, **options):
        async def connect():
            if rcvbuf is not None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                try:
                    await asyncio.get_running_loop().sock_connect(sock, (host, port))
                except BaseException:
                    sock.close()
                    raise
                reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
            else:
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                if sock.getsockname() == sock.getpeername():
                    # Nothing listened and the kernel picked the port itself as the local end (TCP self-connect).
                    writer.transport.abort()
                    raise ConnectionRefusedError("connected to itself: nothing listens on the port")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = cls(reader, writer)
            conn.send(startup(user, database, **options))
            while True:
                kind, body = await conn.read()
                if kind == b"K":
                    conn.key = struct.unpack("!ii", body)
                elif kind == b"E":
                    conn.abort()
                    raise ServerError(fields(body))
                elif kind == b"S":
                    name, value = body.split(b"\0")[:2]
                    conn.parameters[name.decode()] = value.decode()
                elif kind == b"Z":
                    conn.status = body[:1]
                    return conn
                elif kind in (b"R", b"N", b"v"):
                    if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                        conn.abort()
                        raise Anomaly(f"authentication request {struct.unpack('!i', body[:4])[0]} under trust")
                else:
                    conn.abort()
                    raise Anomaly(f"unexpected {kind!r} during login")
        try:
            return await asyncio.wait_for(connect(), timeout)
        except (OSError, asyncio.IncompleteReadError) as error:
            raise Lost(f"connect: {error}") from error
        except asyncio.TimeoutError as error:
            raise Lost("connect: timed out") from error

    def send(self, data):
        if self.closed:
            raise Lost("already closed")
        try:
            self.writer.write(data)
        except (OSError, RuntimeError) as error:
            raise Lost(f"write: {error}") from error

    async def drain(self):
        try:
            await self.writer.drain()
        except (OSError, RuntimeError) as error:
            raise Lost(f"write: {error}") from error

    async def read(self):
        try:
            header = await self.reader.readexactly(5)
            length = struct.unpack("!i", header[1:])[0]
            if length < 4 or length > (1 << 30):
                raise Anomaly(f"message {header[:1]!r} with length {length}")
            body = await self.reader.readexactly(length - 4)
        except asyncio.IncompleteReadError as error:
            self.closed = True
            raise Lost("end of stream") from error
        except (OSError, asyncio.LimitOverrunError) as error:
            self.closed = True
            raise Lost(f"read: {error}") from error
        return header[:1], body

    async def results(self, result, expect_copy_in=False):
        """Reads one request's answer up to ReadyForQuery (or CopyInResponse when `expect_copy_in`)."""
        while True:
            kind, body = await self.read()
            if kind == b"T" or kind in (b"1", b"2", b"n", b"t", b"s", b"3"):
                continue
            if kind == b"D":
                result.rows.append(data_row(body))
            elif kind == b"C":
                result.tags.append(body.rstrip(b"\0").decode(errors="replace"))
            elif kind == b"I":
                result.tags.append("")
            elif kind == b"E":
                error = ServerError(fields(body))
                if result.error is None:
                    result.error = error
                if error.fatal:
                    # The server (or the agent) closes the connection after a FATAL; what follows does not matter.
                    self.abort()
                    raise error
            elif kind in (b"N", b"A"):
                continue
            elif kind == b"S":
                name, value = body.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif kind == b"G":
                if not expect_copy_in:
                    raise Anomaly("CopyInResponse to a request without COPY FROM STDIN")
                result.copy_in = True
                return result
            elif kind == b"Z":
                self.status = body[:1]
                result.status = body[:1]
                return result
            else:
                raise Anomaly(f"unexpected message {kind!r} ({len(body)} bytes)")

    async def simple(self, sql):
        """One simple Query; the Result holds rows, tags and the first error, if any."""
        self.send(query(sql))
        return await self.results(Result())

    def abort(self, rst=False):
        """Closes the connection: with a FIN, or with an RST when `rst` (SO_LINGER 0)."""
        if self.closed and self.writer.transport.is_closing():
            return
        self.closed = True
        try:
            if rst:
                sock = self.writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.writer.transport.abort()
            else:
                self.writer.close()
        except (OSError, RuntimeError):
            pass

    async def close(self):
        """Terminate, then close with a FIN."""
        if not self.closed:
            try:
                self.writer.write(terminate())
            except (OSError, RuntimeError):
                pass
        self.abort()


async def send_cancel(host, port, key, timeout=5.0):
    """Sends a CancelRequest for `key` on a new connection and waits for the agent to close it."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(cancel_request(*key))
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(1), timeout)
        except asyncio.TimeoutError:
            pass
    finally:
        writer.close()


class Control:
    """The agent's control socket: one JSON-RPC 2.0 request per line, one outstanding request at a time."""

    def __init__(self, path):
        self.path = path
        self.reader = None
        self.writer = None
        self.next_id = 0
        self.lock = asyncio.Lock()

    async def connect(self):
        self.reader, self.writer = await asyncio.open_unix_connection(self.path, limit=64 << 20)

    async def call(self, method, timeout=30.0, **params):
        async with self.lock:
            if self.writer is None:
                await self.connect()
            self.next_id += 1
            request = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
            if params:
                request["params"] = params
            try:
                self.writer.write(json.dumps(request).encode() + b"\n")
                await self.writer.drain()
                while True:
                    line = await asyncio.wait_for(self.reader.readline(), timeout)
                    if not line:
                        raise ConnectionError("control socket closed")
                    response = json.loads(line)
                    if response.get("id") == self.next_id:
                        break
            except BaseException:
                self.close()
                raise
            if "error" in response:
                raise RuntimeError(f"{method}: {response['error']}")
            return response["result"]

    def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
            except (OSError, RuntimeError):
                pass
        self.reader = self.writer = None
