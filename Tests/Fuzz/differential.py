"""Differential fuzzer of the agent's transaction pooling.

Rounds of random episodes, one per client: well-formed protocol messages sent at random moments and in random
groupings (simple and extended queries, pipelines with several Syncs, Flush, errors mid-pipeline, named and
unnamed statements and portals, COPY in and out with CopyDone, CopyFail and CopyData at the wrong times,
SQL-level PREPARE, DEALLOCATE and DISCARD, cancels, disconnects in the middle of a message). Every episode
runs once directly against PostgreSQL and once through the agent, where all clients of a round run at once
on a transaction-mode pool of one or two servers. Checked throughout:

  - each client's responses through the agent equal its direct run (backend keys, settings reports, notices
    and table OIDs aside);
  - no client ever receives another client's marker;
  - a server the agent holds idle is idle in pg_stat_activity, never active or inside a transaction;
  - the agent stays up and comes back to its baseline of descriptors after every round.

A violation is shrunk to the fewest units that still show it, printed with the seed and round, and the run
exits 1. Exit 0 means nothing broke.
"""
import argparse
import os
import random
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402

MARKER = re.compile(rb"mk(\d+)x(\d+)k")
NAMES = ["s0", "s1", "s2"]
# Texts of named statements with one parameter; the ones without a marker are shared between clients.
SHARED_TEXTS = ["SELECT $1::int + 1 AS n", "SELECT $1::text || '!' AS t", "SELECT length($1::text) AS l, 1/0 AS boom"]


class Episode:
    """One client's session: ops of (kind, delay, messages[, offset]) to render for a run."""

    def __init__(self, client, number, ops):
        self.client = client
        self.number = number
        self.ops = ops

    @property
    def marker(self):
        return f"mk{self.client}x{self.number}k"

    @property
    def cut(self):
        return any(op[0] == "cut" for op in self.ops)

    def describe(self):
        lines = []
        for op in self.ops:
            text = " ".join(describe_message(m) for m in op[2])
            prefix = {"send": "send", "cancel": "send, then cancel after %.1fs and read to ReadyForQuery" % op[1],
                      "mark": "note the ReadyForQuery received so far",
                      "settle": "wait for a ReadyForQuery more, then until the server is quiet", "cut": "send the first %d bytes of" % op[3] if op[0] == "cut" else ""}[op[0]]
            delay = f"after {op[1] * 1000:.0f} ms, " if op[0] == "send" and op[1] else ""
            lines.append(f"  {delay}{prefix}: {text}")
        return "\n".join(lines)


def describe_message(template):
    kind, *args = template
    return kind + ("(" + ", ".join(repr(a) for a in args) + ")" if args else "")


def render(template, table):
    kind, *args = template
    sub = lambda text: text.replace("{T}", table)  # noqa: E731
    if kind == "Q":
        return pgwire.query(sub(args[0]))
    if kind == "P":
        return pgwire.parse(args[0], sub(args[1]))
    if kind == "B":
        return pgwire.bind(args[0], args[1], args[2])
    if kind == "D":
        return pgwire.describe(args[0], args[1])
    if kind == "E":
        return pgwire.execute(args[0], args[1])
    if kind == "C":
        return pgwire.close(args[0], args[1])
    if kind == "S":
        return pgwire.sync()
    if kind == "H":
        return pgwire.flush()
    if kind == "d":
        return pgwire.copy_data(args[0])
    if kind == "c":
        return pgwire.copy_done()
    if kind == "f":
        return pgwire.copy_fail(args[0])
    raise ValueError(kind)


# MARK: Generating episodes


class Generator:
    def __init__(self, rng):
        self.r = rng

    def episode(self, client, number):
        r = self.r
        marker = f"mk{client}x{number}k"
        # A cancel comes first: behind other requests it would race with them.
        ops = self.cancel(marker, client) if r.random() < 0.08 else []
        for _ in range(r.randint(2, 9)):
            unit = r.choices(
                [self.select, self.error, self.multi, self.empty, self.transaction, self.extended, self.named,
                 self.pipeline, self.copy_in, self.copy_in_extended, self.copy_out, self.sql_prepare,
                 self.stray, self.attack],
                weights=[6, 3, 2, 1, 3, 6, 8, 5, 4, 3, 2, 2, 3, 1],
            )[0]
            ops += unit(marker, client)
        # Some groups go out together, as a pipelining client sends them.
        merged = []
        for op in ops:
            if merged and op[0] == "send" and merged[-1][0] == "send" and r.random() < 0.3:
                merged[-1] = ("send", merged[-1][1], merged[-1][2] + op[2])
            else:
                merged.append(op)
        if r.random() < 0.08:
            # A client that vanishes in the middle of a message.
            tail = self.extended(marker, client)[0][2]
            length = sum(len(render(m, "x")) for m in tail)
            merged.append(("cut", self.delay(), tail, r.randint(1, max(1, length - 1))))
        return Episode(client, number, merged)

    def delay(self):
        r = self.r
        return 0.0 if r.random() < 0.5 else r.choice([0.001, 0.005, 0.02, 0.05])

    def send(self, *messages):
        return [("send", self.delay(), list(messages))]

    def select(self, m, c):
        if self.r.random() < 0.7:
            # False only inside a transaction that began before this statement: one the client began, or,
            # through a faulty pooler, another client's.
            return self.send(("Q", f"SELECT '{m}' AS m, statement_timestamp() = transaction_timestamp() AS fresh"))
        return self.send(("Q", f"SELECT '{m}' AS m, g FROM generate_series(1, {self.r.randint(0, 3)}) g"))

    def error(self, m, c):
        return self.send(("Q", self.r.choice(["SELECT 1/0", "SELEC 1", f"SELECT '{m}'::int", "SELECT * FROM fz_missing"])))

    def multi(self, m, c):
        middle = self.r.choice([f"SELECT '{m}'", "SELECT 1/0", ""])
        return self.send(("Q", f"SELECT 1; {middle}; SELECT 2 AS two"))

    def empty(self, m, c):
        return self.send(("Q", ""))

    def transaction(self, m, c):
        r = self.r
        ops = self.send(("Q", "BEGIN"))
        for _ in range(r.randint(0, 3)):
            ops += r.choice([self.select, self.error, self.extended, self.named])(m, c)
        return ops + self.send(("Q", r.choice(["COMMIT", "ROLLBACK", "END"])))

    def statement_text(self, m):
        r = self.r
        return r.choice([f"SELECT '{m}' AS m, g FROM generate_series(1, 3) g", "SELECT 1/0", "SELEC 2", f"SELECT '{m}' AS only", "SELECT 1 WHERE false",
                         "SELECT statement_timestamp() = transaction_timestamp() AS fresh"])

    def extended(self, m, c):
        """Parse, Bind, Describe, Execute of the unnamed statement and a portal; ends with Sync, or with
        Flush and a Sync later."""
        r = self.r
        portal = r.choice(["", "p1"])
        rows = r.choice([0, 0, 1, 2])
        messages = [("P", "", self.statement_text(m)), ("B", portal, "", [])]
        if r.random() < 0.5:
            messages.append(("D", "P", portal))
        messages.append(("E", portal, rows))
        if rows and r.random() < 0.5:
            messages.append(("E", portal, 0))
        if r.random() < 0.2:
            messages.append(("C", "P", portal))
        if r.random() < 0.25:
            return self.send(*messages, ("H",)) + self.send(("S",))
        return self.send(*messages, ("S",))

    def named(self, m, c):
        """Named statements: Parse (also of a name held already), Bind and Execute, Describe, Close."""
        r = self.r
        name = r.choice(NAMES)
        messages = []
        for _ in range(r.randint(1, 4)):
            action = r.choice(["parse", "parse", "bind", "bind", "bind", "describe", "close"])
            if action == "parse":
                text = r.choice(SHARED_TEXTS + [f"SELECT $1::text || '{m}' AS own"])
                messages.append(("P", name, text))
            elif action == "bind":
                messages += [("B", "", name, [str(r.randint(1, 9))]), ("E", "", 0)]
            elif action == "describe":
                messages.append(("D", "S", name))
            else:
                messages.append(("C", "S", name))
            if r.random() < 0.3:
                messages.append(("S",))
            if r.random() < 0.2:
                name = r.choice(NAMES)
        if not messages or messages[-1] != ("S",):
            messages.append(("S",))
        return self.send(*messages)

    def pipeline(self, m, c):
        r = self.r
        messages = []
        for _ in range(r.randint(2, 4)):
            messages += r.choice([self.extended, self.named])(m, c)[0][2]
            if r.random() < 0.3:
                messages.append(("Q", f"SELECT '{m}' AS piped"))
        return self.send(*messages)

    def copy_rows(self, m):
        r = self.r
        rows = [f"{i}\t{m}\n" for i in range(r.randint(0, 3))]
        if r.random() < 0.25:
            rows.insert(r.randint(0, len(rows)), "not-a-number\tx\n")
        return rows

    def copy_end(self):
        return ("c",) if self.r.random() < 0.8 else ("f", "client gave up")

    def copy_in(self, m, c):
        """Simple COPY FROM STDIN: its input sometimes in the same write as the Query, sometimes with a
        stray Sync or Flush among the data, ended by CopyDone or CopyFail."""
        r = self.r
        data = [("d", row) for row in self.copy_rows(m)]
        if r.random() < 0.2:
            data.insert(r.randint(0, len(data)), r.choice([("S",), ("H",)]))
        end = self.copy_end()
        # With a Sync among the data, the agent cannot tell how many ReadyForQuery a failed COPY owes until
        # the server says more; a client that pipelines an answered message behind it is closed. Clients wait.
        settle = [("settle", 0.2, [])] if ("S",) in data else []
        mark = [("mark", 0, [])] if settle else []
        if r.random() < 0.3:
            return mark + self.send(("Q", "COPY {T} FROM STDIN"), *data, end) + settle
        return mark + self.send(("Q", "COPY {T} FROM STDIN")) + self.send(*data) + self.send(end) + settle

    def copy_in_extended(self, m, c):
        r = self.r
        data = [("d", row) for row in self.copy_rows(m)]
        head = [("P", "", "COPY {T} FROM STDIN"), ("B", "", "", []), ("E", "", 0), ("S",)]
        # The Sync behind the Execute may or may not be read by a failing COPY: see copy_in. The Sync that
        # ends the COPY sometimes comes a while after its CopyDone and a Flush: the COPY's result arrives,
        # and the server stays in its transaction until that Sync.
        mark = [("mark", 0, [])]
        if r.random() < 0.3:
            return mark + self.send(*head) + self.send(*data, self.copy_end(), ("H",)) + [("send", 0.3, [("S",)]), ("settle", 0.2, [])]
        return mark + self.send(*head) + self.send(*data, self.copy_end(), ("S",)) + [("settle", 0.2, [])]

    def copy_out(self, m, c):
        sql = f"COPY (SELECT '{m}', g FROM generate_series(1, {self.r.randint(0, 3)}) g) TO STDOUT"
        if self.r.random() < 0.5:
            return self.send(("Q", sql))
        return self.send(("P", "", sql), ("B", "", "", []), ("E", "", 0), ("S",))

    def sql_prepare(self, m, c):
        r = self.r
        return self.send(("Q", r.choice([
            f"BEGIN; PREPARE q{c} AS SELECT '{m}' AS q; EXECUTE q{c}; DEALLOCATE q{c}; COMMIT",
            "DEALLOCATE ALL",
            "DISCARD ALL",
            f"DEALLOCATE q{c}",
        ])))

    def stray(self, m, c):
        """COPY messages, Sync and Flush with no COPY running."""
        r = self.r
        return self.send(*[r.choice([("d", "stray\n"), ("c",), ("f", "stray"), ("S",), ("H",)]) for _ in range(r.randint(1, 3))])

    def cancel(self, m, c):
        return [("cancel", 0.4, [("Q", f"SELECT pg_sleep(2), '{m}'")])]

    def attack(self, m, c):
        """The sequence that once handed one client's rows to another."""
        return (
            self.send(("Q", "CREATE TEMP TABLE IF NOT EXISTS pa(a int); COPY pa FROM STDIN"), ("c",))
            + self.send(("P", "", "SELEC"), ("S",))
            + self.send(("f", "late"))
            + self.send(("D", "P", ""))
        )


# MARK: Running


class Transcript:
    """Messages one connection received, collected by a reader thread."""

    def __init__(self, conn):
        self.conn = conn
        self.messages = []
        self.error = None
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while True:
                kind, body = self.conn.read(timeout=None)
                with self.condition:
                    self.messages.append((kind, body))
                    self.condition.notify_all()
        except (pgwire.Closed, OSError) as error:
            with self.condition:
                self.error = str(error) or type(error).__name__
                self.condition.notify_all()

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        with self.condition:
            while not predicate(self.messages) and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.condition.wait(left)
            return predicate(self.messages)


def comparable(messages):
    normalised = [n for n in (pgwire.normalise(kind, body) for kind, body in messages) if n is not None]
    # A cancel races with the statement's start: cancelled while it waited for a server (the agent answers)
    # or once running (PostgreSQL sent its RowDescription first). Both are a cancelled statement.
    return [n for i, n in enumerate(normalised)
            if not (n[0] == "T" and i + 1 < len(normalised) and normalised[i + 1][:3] == ("E", "ERROR", "57014"))]


def run_episode(episode, host, port, user, database, table, reference=None, timeout=30.0):
    """Plays an episode on a new connection. Without `reference`, plays it fully and returns what came
    back (a direct run); with one, returns (messages, problem) after reading as many as it holds."""
    conn = pgwire.Connection(host, port, timeout=timeout)
    try:
        conn.login(user, database)
    except Exception as error:  # noqa: BLE001
        conn.close()
        return [], f"login failed: {error}"
    transcript = Transcript(conn)
    z_mark = 0
    try:
        for op in episode.ops:
            kind, delay, templates = op[0], op[1], op[2]
            data = b"".join(render(t, table) for t in templates)
            if kind == "send":
                if delay and reference is not None:
                    time.sleep(delay)
                conn.send(data)
            elif kind == "cancel":
                seen = len(transcript.messages)
                conn.send(data)
                time.sleep(delay)
                conn.cancel(host, port)
                transcript.wait(lambda ms: any(k == b"Z" for k, _ in ms[seen:]), timeout)
            elif kind == "mark":
                z_mark = sum(1 for k, _ in transcript.messages if k == b"Z")
            elif kind == "settle":
                # Wait for the ReadyForQuery that ends the unit (the client may first wait for a server), then
                # until the server has been quiet a while: what follows is not pipelined behind it.
                transcript.wait(lambda ms: sum(1 for k, _ in ms if k == b"Z") > z_mark, timeout)
                while True:
                    count = len(transcript.messages)
                    transcript.wait(lambda ms: len(ms) > count, delay)
                    if len(transcript.messages) == count:
                        break
            elif kind == "cut":
                if reference is not None:
                    time.sleep(delay)
                conn.send(data[:op[3]])
                conn.close()
                transcript.wait(lambda ms: False, 0.2)
                return transcript.messages, None
    except pgwire.Closed as error:
        if reference is None:
            return transcript.messages, None
        transcript.wait(lambda ms: False, 0.1)
        return transcript.messages, f"connection closed while sending: {error}"
    if reference is None:
        # Everything the server answers to this input, without a Terminate that could itself be answered
        # (inside COPY it is an error): read until the server has been quiet for a while.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = len(transcript.messages)
            transcript.wait(lambda ms: len(ms) > count, 0.3)
            if len(transcript.messages) == count:
                break
        conn.close()
        return transcript.messages, None
    wanted = len(reference)
    transcript.wait(lambda ms: len(comparable(ms)) >= wanted, timeout)
    # Anything beyond the reference would be extra: give it a moment to show.
    transcript.wait(lambda ms: len(comparable(ms)) > wanted, 0.15)
    conn.send(pgwire.terminate()) if not conn.closed else None
    conn.close()
    return transcript.messages, None


def first_difference(expected, got):
    for index, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return index
    if len(expected) != len(got):
        return min(len(expected), len(got))
    return None


class Round:
    """One round: every client's episode run directly, then all of them at once through the agent."""

    def __init__(self, options, episodes):
        self.o = options
        self.episodes = episodes
        self.references = {}
        self.violations = []

    def run(self):
        o = self.o
        threads = []
        for episode in self.episodes:
            def direct(episode=episode):
                messages, _ = run_episode(episode, o.pg_host, o.pg_port, o.user, o.database, f"fz_d_{episode.client}")
                self.references[episode.client] = comparable(messages)
            threads.append(threading.Thread(target=direct))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = {}
        threads = []
        for episode in self.episodes:
            def through_agent(episode=episode):
                reference = self.references[episode.client]
                results[episode.client] = run_episode(
                    episode, o.agent_host, o.agent_port, o.user, o.database, f"fz_a_{episode.client}", reference=reference
                )
            threads.append(threading.Thread(target=through_agent))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for episode in self.episodes:
            messages, problem = results[episode.client]
            raw = b"".join(kind + body for kind, body in messages)
            for match in MARKER.finditer(raw):
                if int(match.group(1)) != episode.client:
                    self.violations.append((episode.client, "marker", f"received another client's marker {match.group(0).decode()}"))
                    break
            if episode.cut:
                continue
            if problem:
                self.violations.append((episode.client, "connection", problem))
                continue
            expected = self.references[episode.client]
            got = comparable(messages)
            index = first_difference(expected, got)
            if index is not None:
                show = lambda items: "\n".join(f"      {i}: {items[i]}" for i in range(max(0, index - 2), min(len(items), index + 3)))  # noqa: E731
                self.violations.append((
                    episode.client, "responses",
                    f"responses differ from PostgreSQL's at message {index} ({len(expected)} expected, {len(got)} received)\n"
                    f"    PostgreSQL:\n{show(expected)}\n    agent:\n{show(got)}",
                ))
        return self.violations


# MARK: Watching the agent


class Monitor(threading.Thread):
    """Checks that every server the agent holds idle is idle in pg_stat_activity, a few times a second."""

    def __init__(self, options):
        super().__init__(daemon=True)
        self.o = options
        self.stop = threading.Event()
        self.violations = []
        self.samples = 0

    def idle_servers(self, control):
        servers = control.call("list-servers")["servers"]
        return {s["backend_pid"]: s["idle_s"] for s in servers if s["state"] == "idle"}

    def run(self):
        o = self.o
        control = pgwire.Control(o.control)
        try:
            while not self.stop.wait(0.15):
                before = self.idle_servers(control)
                taken = time.monotonic()
                states = {int(pid): state for pid, state in pgwire.simple(
                    o.pg_host, o.pg_port, o.admin, o.database,
                    f"SELECT pid, state FROM pg_stat_activity WHERE usename = '{o.user}' AND backend_type = 'client backend'",
                )}
                after = self.idle_servers(control)
                elapsed = time.monotonic() - taken
                self.samples += 1
                for pid, idle in before.items():
                    # Idle in the agent all along: its idle time grew by at least the time the sample took.
                    if pid in after and after[pid] + 0.001 >= idle + elapsed * 0.9 and idle > 0:
                        state = states.get(pid)
                        if state is not None and state != "idle":
                            self.violations.append(f"server with backend {pid} is idle in the agent but '{state}' in pg_stat_activity")
        except Exception as error:  # noqa: BLE001
            self.violations.append(f"monitor failed: {error}")
        finally:
            control.close()


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_servers(control):
    return len(control.call("list-servers")["servers"])


def fd_kinds(pid):
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def check_round(options, episodes, control, baseline):
    """Runs one round, then checks that the agent is up and back to its baseline of descriptors."""
    violations = Round(options, episodes).run()
    try:
        os.kill(options.agent_pid, 0)
    except OSError:
        return violations + [(None, "agent", "the agent is gone")]
    # Back to the baseline: every client socket closed, two descriptors (libpq's and the agent's) per server.
    deadline = time.monotonic() + 5
    while True:
        extra = descriptors(options.agent_pid) - 2 * open_servers(control) - baseline
        if extra <= 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if extra > 0:
        servers = control.call("list-servers")
        violations.append((None, "descriptors", f"{extra} descriptor(s) above the baseline after the round: {fd_kinds(options.agent_pid)}, "
                                 f"servers {[(s['backend_pid'], s['state']) for s in servers['servers']]}, "
                                 f"closed {servers['recently_closed'][-5:]}"))
    return violations


# MARK: Shrinking


def shrink(options, episodes, still_fails, deadline):
    """Removes ops (and then messages inside ops) while the round still fails; returns the smallest found."""
    current = [Episode(e.client, e.number, list(e.ops)) for e in episodes]
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for episode in current:
            index = 0
            while index < len(episode.ops) and time.monotonic() < deadline:
                candidate = episode.ops[:index] + episode.ops[index + 1:]
                trial = [Episode(e.client, e.number, candidate if e is episode else e.ops) for e in current]
                if candidate and still_fails(trial):
                    episode.ops = candidate
                    changed = True
                else:
                    index += 1
        if len(current) > 1:
            for episode in list(current):
                trial = [e for e in current if e is not episode]
                if time.monotonic() < deadline and still_fails(trial):
                    current = trial
                    changed = True
    return current


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--first-round", type=int, default=0, help="start at this round (to replay one)")
    parser.add_argument("--rounds", type=int, default=0, help="stop after this many rounds (0: run for --seconds)")
    parser.add_argument("--agent-host", default="127.0.0.1")
    parser.add_argument("--agent-port", type=int, required=True)
    parser.add_argument("--agent-pid", type=int, required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--pg-host", required=True)
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--user", default="pa_fuzz")
    parser.add_argument("--admin", default="postgres")
    parser.add_argument("--database", default="postgres", help="comma-separated; rounds take turns")
    parser.add_argument("--shrink-seconds", type=float, default=120)
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1 << 32)
    print(f"fuzz: seed {seed}, {options.clients} clients, {options.seconds:.0f} s", flush=True)

    databases = options.database.split(",")
    for database in databases:
        for run in ("d", "a"):
            for client in range(options.clients):
                pgwire.simple(options.pg_host, options.pg_port, options.admin, database,
                              f"CREATE TABLE IF NOT EXISTS fz_{run}_{client} (a int, b text); GRANT ALL ON fz_{run}_{client} TO {options.user}")
    options.database = databases[0]

    control = pgwire.Control(options.control)
    monitor = Monitor(options)
    monitor.start()
    time.sleep(0.5)
    baseline = descriptors(options.agent_pid) - 2 * open_servers(control)
    started = time.monotonic()
    rounds = 0
    episodes_run = 0
    failure = None
    round_number = options.first_round
    while True:
        if options.rounds and rounds >= options.rounds:
            break
        if not options.rounds and time.monotonic() - started >= options.seconds:
            break
        options.database = databases[round_number % len(databases)]
        rng = random.Random(f"{seed}:{round_number}")
        generator = Generator(rng)
        episodes = [generator.episode(client, round_number) for client in range(options.clients)]
        violations = check_round(options, episodes, control, baseline)
        rounds += 1
        episodes_run += len(episodes)
        if monitor.violations:
            violations += [(None, "monitor", v) for v in monitor.violations]
            monitor.violations.clear()
        if violations:
            failure = (round_number, episodes, violations)
            break
        round_number += 1
    monitor.stop.set()
    monitor.join()
    elapsed = time.monotonic() - started
    if failure is None:
        print(f"fuzz: ok, seed {seed}: {rounds} rounds, {episodes_run} episodes in {elapsed:.0f} s, "
              f"{monitor.samples} pg_stat_activity samples, nothing broke", flush=True)
        return 0

    round_number, episodes, violations = failure
    print(f"fuzz: FAILED at seed {seed} round {round_number}, database {options.database} (replay: --seed {seed} --first-round {round_number} --rounds 1)", flush=True)
    for client, _, text in violations:
        print(f"  client {client}: {text}" if client is not None else f"  {text}", flush=True)
    clients = {client for client, _, _ in violations if client is not None}
    kinds = {(client, kind) for client, kind, _ in violations}

    def still_fails(trial):
        for _ in range(3):
            found = check_round(options, trial, control, baseline)
            if any((client, kind) in kinds for client, kind, _ in found):
                return True
        return False

    alone = [e for e in episodes if e.client in clients]
    if alone and len(alone) < len(episodes) and still_fails(alone):
        episodes = alone
        print("fuzz: the failing client(s) fail on their own too", flush=True)
    smallest = shrink(options, episodes, still_fails, time.monotonic() + options.shrink_seconds)
    print("fuzz: smallest failing round found:", flush=True)
    for episode in smallest:
        print(f" client {episode.client} (marker {episode.marker}):\n{episode.describe()}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
