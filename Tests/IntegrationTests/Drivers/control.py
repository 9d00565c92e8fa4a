"""The control socket driven raw: every method checked against protocol/openrpc.json, then bad input.

Run by the Swift integration suite: python3 control.py SOCKET OPENRPC_JSON DATA_PORT. Exit status 0 means
every check held; a failed check prints what differed and exits 1.
"""
import asyncio
import json
import socket
import sys
import time

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from driver_support import check

SOCKET, DOCUMENT, DATA_PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
document = json.load(open(DOCUMENT))
registry = Registry().with_resource("urn:openrpc", Resource(contents=document, specification=DRAFT202012))
methods = {m["name"]: m for m in document["methods"]}
errors = document["components"]["errors"]


def validate(schema, value, what):
    validator = jsonschema.Draft202012Validator({"$ref": "urn:openrpc" + schema["$ref"]} if "$ref" in schema else schema, registry=registry)
    problems = sorted(validator.iter_errors(value), key=lambda e: e.path)
    check(not problems, f"{what} does not match its schema: {problems[:1]} in {json.dumps(value)[:400]}")


class Control:
    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(SOCKET)
        self.buffer = b""
        self.next_id = 1
        self.events = []

    def send_raw(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def event(self):
        return self.events.pop(0) if self.events else self.line()

    def call(self, method, params=None):
        request = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
        self.next_id += 1
        if params is not None:
            request["params"] = params
        self.send_raw(json.dumps(request).encode() + b"\n")
        response = self.line()
        while response.get("method") == "event":
            self.events.append(response)
            response = self.line()
        check(response.get("id") == request["id"], f"response id {response.get('id')} for request {request['id']}")
        return response


def result_of(control, method, params=None):
    response = control.call(method, params)
    check("result" in response, f"{method} failed: {response}")
    validate(methods[method]["result"]["schema"], response["result"], f"{method} result")
    return response["result"]


def error_of(control, method, params, code):
    response = control.call(method, params)
    check("error" in response, f"{method} {params} should fail, got {response}")
    error = response["error"]
    check(error["code"] == code, f"{method} {params}: code {error['code']}, expected {code}: {error}")
    check(isinstance(error.get("data"), dict), f"{method}: error without a data object: {error}")
    for named in errors.values():
        if named["code"] == code:
            validate(named["data"], error["data"], f"{method} error data")
    return error


def data_plane_answers():
    """A PostgreSQL client still gets through while the control socket is abused."""
    s = socket.create_connection(("127.0.0.1", DATA_PORT), timeout=10)
    body = b"\x00\x03\x00\x00user\x00postgres\x00database\x00postgres\x00\x00"
    s.sendall(len(body + b"1234").to_bytes(4, "big") + body)
    data = b""
    while b"Z\x00\x00\x00\x05" not in data:
        chunk = s.recv(65536)
        check(chunk, "data plane closed during login")
        data += chunk
    s.sendall(b"Q\x00\x00\x00\x0dSELECT 1\x00")
    data = b""
    while b"Z\x00\x00\x00\x05" not in data:
        chunk = s.recv(65536)
        check(chunk, "data plane closed during a query")
        data += chunk
    s.close()


def methods_and_schemas():
    control = Control()
    discovered = result_of(control, "rpc.discover")
    check(discovered == document, "rpc.discover returns protocol/openrpc.json")
    result_of(control, "version")
    stats = result_of(control, "stats")
    pool = stats["pools"][0]["name"]
    result_of(control, "stats", {"pool": pool})
    result_of(control, "health")
    result_of(control, "list-clients")
    result_of(control, "list-servers", {"pool": pool})
    result_of(control, "config")
    subscribed = result_of(control, "subscribe", {"events": ["resize", "recycle"]})
    check(subscribed["subscribed"] == ["recycle", "resize"], f"subscribed {subscribed}")
    before = result_of(Control(), "stats", {"pool": pool})["pools"][0]["size"]
    result_of(control, "resize", {"pool": pool, "size": before + 1})
    event = control.event()
    check(event.get("method") == "event" and event["params"]["type"] == "resize", f"resize event, got {event}")
    validate({"$ref": "#/components/schemas/Event"}, event["params"], "event")
    result_of(control, "resize", {"pool": pool, "size": before})
    check(control.event()["params"]["type"] == "resize", "a second resize event")
    result_of(control, "set-recycle", {"pool": pool, "idle_timeout_s": 3600})
    check(control.event()["params"]["type"] == "recycle", "a recycle event")
    result_of(control, "reconnect", {"pool": pool})
    result_of(control, "drain", {"pool": pool, "deadline_s": 10})
    result_of(control, "resume", {"pool": pool})
    result_of(control, "reload")
    error_of(control, "kill-client", {"id": 999999}, -32006)
    error_of(control, "stats", {"pool": "no-such-pool"}, -32001)
    print("methods ok", flush=True)


def bad_input():
    control = Control()
    size = result_of(control, "stats")["pools"][0]["size"]
    pool = result_of(control, "stats")["pools"][0]["name"]
    control.send_raw(b"this is not json\n")
    check(control.line()["error"]["code"] == -32700, "not JSON: -32700")
    control.send_raw(b"[1, 2]\n")
    batch = control.line()
    check(isinstance(batch, list) and all(r["error"]["code"] == -32600 for r in batch), f"not requests: {batch}")
    control.send_raw(b'{"jsonrpc": "2.0", "id": 5}\n')
    check(control.line()["error"]["code"] == -32600, "no method: -32600")
    error_of(control, "no-such-method", None, -32601)
    for bad in (-1, 0, 2.5, "ten", None):
        error_of(control, "resize", {"pool": pool, "size": bad}, -32602)
    error_of(control, "resize", {"pool": pool, "sise": 3}, -32602)
    check(result_of(control, "stats")["pools"][0]["size"] == size, "a refused resize changed nothing")
    control.send_raw(b'{"jsonrpc": "2.0", "method": "version", "id": "\xff\xfe"}\n')
    check(control.line()["error"]["code"] == -32700, "invalid UTF-8: -32700")
    # A batch of 1000, with a notification inside: 999 responses.
    requests = [{"jsonrpc": "2.0", "method": "version", "id": i} for i in range(999)] + [{"jsonrpc": "2.0", "method": "version"}]
    control.send_raw(json.dumps(requests).encode() + b"\n")
    answers = control.line()
    check(len(answers) == 999 and sorted(a["id"] for a in answers) == list(range(999)), "a batch of 1000")
    control.send_raw(json.dumps(requests + requests[:1]).encode() + b"\n")
    check(control.line()["error"]["code"] == -32600, "a batch of 1001 is refused")
    # A line over 1 MiB: an error, then the connection is closed.
    big = Control()
    big.send_raw(b'{"jsonrpc": "2.0", "method": "version", "params": {"x": "' + b"a" * (1 << 20) + b'"}, "id": 1}\n')
    check(big.line()["error"]["code"] == -32600, "over 1 MiB: -32600")
    try:
        big.line()
        check(False, "the connection stays open after an oversized line")
    except (ConnectionError, OSError):
        pass
    # A half-written line, then disconnect.
    half = Control()
    half.send_raw(b'{"jsonrpc": "2.0", "meth')
    half.sock.close()
    # A client that sends but never reads.
    lazy = Control()
    lazy.sock.setblocking(False)
    request = b'{"jsonrpc": "2.0", "method": "list-servers", "id": 1}\n' * 200
    try:
        for _ in range(2000):
            lazy.sock.send(request)
    except (BlockingIOError, OSError):
        pass
    data_plane_answers()
    check(result_of(Control(), "version")["version"], "still answering after a client that never reads")
    print("bad input ok", flush=True)


async def concurrent_connections(count):
    async def one(i):
        reader, writer = await asyncio.open_unix_connection(SOCKET)
        writer.write(json.dumps({"jsonrpc": "2.0", "method": "version", "id": i}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        return json.loads(line)["id"] == i

    results = await asyncio.gather(*(one(i) for i in range(count)))
    check(all(results), "200 concurrent connections each got their answer")
    print("concurrency ok", flush=True)


methods_and_schemas()
bad_input()
asyncio.run(concurrent_connections(200))
data_plane_answers()
