"""Raw PostgreSQL protocol v3 for the fuzzer and the reproductions: message builders, a blocking client,
normalised comparison of server messages, and a JSON-RPC client for the agent's control socket.

Standard library only, so it runs with any python3.
"""
import json
import socket
import struct
import time

PROTOCOL_3 = 196608
CANCEL_CODE = 80877102


def message(kind, body=b""):
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(text):
    return (text.encode() if isinstance(text, str) else text) + b"\0"


def query(sql):
    return message(b"Q", cstr(sql))


def parse(name, sql, types=()):
    return message(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(types)) + b"".join(struct.pack("!I", t) for t in types))


def bind(portal, statement, params=()):
    body = cstr(portal) + cstr(statement) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for param in params:
        if param is None:
            body += struct.pack("!i", -1)
        else:
            data = param.encode() if isinstance(param, str) else param
            body += struct.pack("!i", len(data)) + data
    return message(b"B", body + struct.pack("!h", 0))


def describe(kind, name):
    return message(b"D", kind.encode() + cstr(name))


def execute(portal="", max_rows=0):
    return message(b"E", cstr(portal) + struct.pack("!i", max_rows))


def close(kind, name):
    return message(b"C", kind.encode() + cstr(name))


def sync():
    return message(b"S")


def flush():
    return message(b"H")


def copy_data(data):
    return message(b"d", data.encode() if isinstance(data, str) else data)


def copy_done():
    return message(b"c")


def copy_fail(reason):
    return message(b"f", cstr(reason))


def terminate():
    return message(b"X")


def startup(user, database, **options):
    body = struct.pack("!i", PROTOCOL_3)
    for key, value in [("user", user), ("database", database)] + list(options.items()):
        body += cstr(key) + cstr(value)
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def fields(body):
    """The fields of an ErrorResponse or NoticeResponse body, by code letter."""
    result = {}
    index = 0
    while index < len(body) and body[index] != 0:
        code = chr(body[index])
        end = body.index(b"\0", index + 1)
        result[code] = body[index + 1:end].decode(errors="replace")
        index = end + 1
    return result


def data_row(body):
    """The values of a DataRow body, as text (None for NULL)."""
    count = struct.unpack("!h", body[:2])[0]
    index = 2
    row = []
    for _ in range(count):
        length = struct.unpack("!i", body[index:index + 4])[0]
        index += 4
        if length < 0:
            row.append(None)
        else:
            row.append(body[index:index + length].decode(errors="replace"))
            index += length
    return row


def split_messages(data):
    """Whole messages in `data` and the bytes of an incomplete last one."""
    messages = []
    index = 0
    while len(data) - index >= 5:
        kind = data[index:index + 1]
        length = struct.unpack("!i", data[index + 1:index + 5])[0]
        if len(data) - index < length + 1:
            break
        messages.append((kind, data[index + 5:index + 1 + length]))
        index += length + 1
    return messages, data[index:]


# Messages a client cannot expect to match between two sessions: settings reports, notices and notifications
# (their text can name a backend), and the key of a session.
IGNORED = {b"S", b"N", b"A", b"K"}


def normalise(kind, body):
    """What of a server message must be equal between two runs of the same input; None for ignored ones."""
    if kind in IGNORED:
        return None
    if kind == b"E":
        error = fields(body)
        return ("E", error.get("V", error.get("S")), error.get("C"), error.get("M"))
    if kind == b"T":
        # Column names and types; table OIDs and attribute numbers differ between sessions.
        count = struct.unpack("!h", body[:2])[0]
        columns = []
        index = 2
        for _ in range(count):
            end = body.index(b"\0", index)
            name = body[index:end]
            table, attribute, type_oid, size, modifier, fmt = struct.unpack("!IhIhih", body[end + 1:end + 19])
            columns.append((name, type_oid, size, modifier, fmt))
            index = end + 19
        return ("T", tuple(columns))
    return (kind.decode(errors="replace"), bytes(body))


class Closed(Exception):
    pass


class Connection:
    """A blocking raw connection. `login` sends a startup packet and reads up to the first ReadyForQuery."""

    def __init__(self, host, port, timeout=10.0):
        if host.startswith("/"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.buffer = b""
        self.received = bytearray()
        self.key = None
        self.closed = False

    def login(self, user, database, **options):
        self.send(startup(user, database, **options))
        while True:
            kind, body = self.read()
            if kind == b"K":
                self.key = struct.unpack("!ii", body)
            elif kind == b"E":
                raise RuntimeError(f"login refused: {fields(body)}")
            elif kind == b"Z":
                return

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise Closed(str(error)) from error

    def read(self, timeout=None):
        """The next whole message; raises socket.timeout or Closed."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            messages, rest = split_messages(self.buffer)
            if messages:
                kind, body = messages[0]
                self.buffer = self.buffer[5 + len(body):]
                return kind, body
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as error:
                self.closed = True
                raise Closed("reset") from error
            if not chunk:
                self.closed = True
                raise Closed("end of stream")
            self.received += chunk
            self.buffer += chunk

    def read_until(self, kinds, timeout=10.0):
        """Messages up to and including the first of a kind in `kinds`."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            kind, body = self.read(max(0.01, deadline - time.monotonic()))
            out.append((kind, body))
            if kind in kinds:
                return out

    def read_to_end(self, timeout=10.0):
        """Every message until the server closes the connection (or `timeout` passes)."""
        out = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                out.append(self.read(max(0.01, deadline - time.monotonic())))
        except (Closed, socket.timeout):
            pass
        return out

    def cancel(self, host, port):
        if self.key is None:
            return
        other = Connection(host, port)
        other.send(struct.pack("!iiii", 16, CANCEL_CODE, *self.key))
        other.close()

    def close(self):
        # shutdown first: a reader thread blocked in recv would otherwise keep the socket open.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def simple(host, port, user, database, sql):
    """Runs one simple query on a new connection; returns its rows as lists of text (None for NULL)."""
    conn = Connection(host, port)
    try:
        conn.login(user, database)
        conn.send(query(sql))
        rows = []
        for kind, body in conn.read_until({b"Z"}, timeout=30):
            if kind == b"D":
                rows.append(data_row(body))
            elif kind == b"E":
                raise RuntimeError(f"{sql}: {fields(body)}")
        conn.send(terminate())
        return rows
    finally:
        conn.close()


class Control:
    """The agent's control socket: one JSON-RPC 2.0 request per line."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(10)
        self.file = self.sock.makefile("rwb")
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params:
            request["params"] = params
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        while True:
            response = json.loads(self.file.readline())
            if response.get("id") == self.next_id:
                if "error" in response:
                    raise RuntimeError(f"{method}: {response['error']}")
                return response["result"]

    def close(self):
        self.sock.close()
