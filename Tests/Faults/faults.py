#!/usr/bin/env python3
"""Fault matrix: a mixed client load through poolagent while one fault at a time is injected, then the ledger,
the cross-client check and the agent's resources are checked. Run it through scripts/faults.

Every scenario starts its own agent (transaction mode, pool size 20) and truncates the ledger. What every
scenario checks, the same way:
  ledger     every acked write is in the table exactly once ("lost", "dup"); every failed one is absent
             ("phantom"); nothing is there that no client wrote ("stray"); operations whose outcome is unknown
             (the connection died after the commit was asked for) are at most the scenario's fault budget
  bytes      every value a client reads back carries its own marker; no protocol anomaly; no hang
  cancels    no client of the load ever gets 57014 (cancels reach only their target)
  progress   the load never goes more than 20 s without an acknowledged write
  baseline   within 5 s of the load stopping: no client, no waiter, no busy server, at most size + overflow
             servers, as many backends of the agent in pg_stat_activity as servers in the agent and none
             idle in transaction, descriptors back to the baseline (2 per open server, +2 tolerance), no
             TCP socket of the agent in CLOSE-WAIT and no Unix socket whose peer is gone, RSS at most
             baseline + 30 MiB

Fault budgets (operations with an unknown outcome allowed):
  F1  one per terminated backend (a backend serves one client at a time)
  F2  size + max_overflow per restart (every server dies, each serves one client)
  F3  size + max_overflow per outage (a dropped link can break every server connection)
  F8  the number of clients per agent stop (every client can be waiting for an answer)
  others 0: draining, resizing, recycling, cancels, timeouts and other clients' aborts must not lose an answer

Beyond those, scenarios check what their fault is about: F1 also terminates every backend of the idle pool
(4 times, a lone query after each); F4 also floods the agent past max_client_conn and bounds the agent's
memory growth across the aborts (1 KiB per aborted connection, at least 8 MiB); F5-F7 check the control
method's effect; F8 times the exit after SIGTERM; F9 checks every cancelled query gets 57014 and no bystander
does; F10 bounds RSS while 3 clients do not read 100 MB results; F11 checks each timeout's SQLSTATE, message
and timing.
"""
import argparse
import asyncio
import os
import random
import resource
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import env  # noqa: E402
import load  # noqa: E402
import wire  # noqa: E402

SIZE = 20
OVERFLOW = 0
FD_TOLERANCE = 2
RSS_TOLERANCE_MIB = 30
SETTLE_SECONDS = 5
MAX_ACK_GAP = 20.0


class Skip(Exception):
    pass


def say(text):
    print(text, file=sys.stderr, flush=True)


def config_text(pg, upstream=None, agent_extra="", pools_extra="", main_extra=""):
    upstream = upstream or f"host={pg.socket_dir} port={pg.port} user={env.AGENT_USER} dbname=postgres"
    return f"""# Written by scripts/faults.
[agent]
listen = ["127.0.0.1:@PORT@"]
control_socket = "@CONTROL@"
shutdown_timeout = "5s"
log_level = "notice"
{agent_extra}
[auth]
tcp = "trust"

[defaults]
mode = "transaction"
size = {SIZE}
max_overflow = {OVERFLOW}
wait_timeout = "30s"

[pools.postgres]
upstream = "{upstream}"
{main_extra}
{pools_extra}
"""


def heading(code, title):
    text = f"{code} {title} "
    return text + "." * max(3, 48 - len(text))


class Run:
    """One scenario: its agent, load, fault count, budget and verdict."""

    def __init__(self, options, pg, code, title):
        self.options = options
        self.pg = pg
        self.code = code
        self.title = title
        self.rng = random.Random(f"{options.seed}:{code}")
        self.ledger = load.Ledger(code)
        self.agent = None
        self.load = None
        self.faults = 0
        self.budget = 0
        self.failures = []
        self.notes = []
        self.baseline = None
        self.final = None
        self.load_started = None
        self.load_stopped = None
        self.ledger_summary = None
        self.extra_pools = []

    # MARK: pieces a scenario uses

    def fail(self, reason):
        self.failures.append(reason)

    def note(self, text):
        self.notes.append(text)

    def new_agent(self, **config):
        return env.Agent(self.options.binary, self.options.work, f"agent-{self.code}", self.options.agent_port,
                         config_text(self.pg, **config))

    async def config_accepted(self, **config):
        """(True, "") when `poolagent --check` accepts this configuration, else (False, its complaint)."""
        agent = self.new_agent(**config)
        status, out = await env.run([self.options.binary, "--check", "--config", agent.config_path], check=False)
        complaint = out.strip().splitlines()[-1].split("; expected one of")[0] if out.strip() else f"exit {status}"
        return status == 0, complaint[:300]

    async def agent_up(self, **config):
        self.agent = self.new_agent(**config)
        await self.agent.start()
        await asyncio.sleep(0.5)
        self.baseline = await self.snapshot()

    def load_up(self, clients=None):
        self.load = load.Load(self.ledger, "127.0.0.1", self.options.agent_port, "postgres",
                              clients or self.options.clients, self.rng.random())
        self.load.start()
        self.load_started = time.monotonic()

    async def load_down(self):
        await self.load.stop()
        self.load_stopped = time.monotonic()

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)

    async def snapshot(self):
        """Resources and pool state of the agent now."""
        stats = await self.agent.call("stats")
        pools = {p["name"]: p for p in stats["pools"]}
        servers = sum(p["servers"]["open"] for p in pools.values())
        opening = sum(p["servers"]["opening"] for p in pools.values())
        fds = self.agent.fds()
        return {
            "fds": fds,
            "servers": servers,
            "opening": opening,
            "fds_base": fds - 2 * servers - opening,
            "rss": self.agent.rss_mib(),
            "stats": stats,
            "pools": pools,
        }

    async def settle(self):
        """Waits up to 5 s for the agent to be back at its baseline; records what is not."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            problems = []
            if not self.agent.alive():
                self.fail(f"the agent is gone (exit {self.agent.process.returncode}): {self.agent.log_tail(5)}")
                return
            snap = await self.snapshot()
            for name, pool in snap["pools"].items():
                if name in self.extra_pools:
                    continue
                servers, clients = pool["servers"], pool["clients"]
                limit = pool["size"] + pool["max_overflow"]
                if clients["active"] or clients["waiting"]:
                    problems.append(f"pool {name}: {clients['active']} active, {clients['waiting']} waiting clients")
                if servers["active"] or servers["opening"]:
                    problems.append(f"pool {name}: {servers['active']} active, {servers['opening']} opening servers")
                if servers["open"] > limit:
                    problems.append(f"pool {name}: {servers['open']} servers open > size + overflow {limit}")
                if pool["draining"]:
                    problems.append(f"pool {name} is still draining")
            if snap["stats"]["agent"]["clients"]:
                problems.append(f"{snap['stats']['agent']['clients']} clients still connected to the agent")
            backends = await self.pg.agent_backends()
            in_transaction = [b for b in backends if b[1].startswith("idle in transaction")]
            if in_transaction:
                problems.append(f"{len(in_transaction)} backends of the agent idle in transaction: "
                                f"{[(b[0], b[1], b[2][:60]) for b in in_transaction[:5]]}")
            if len(backends) != snap["servers"]:
                problems.append(f"pg_stat_activity has {len(backends)} backends of the agent, the agent {snap['servers']} servers")
            if snap["fds_base"] > self.baseline["fds_base"] + FD_TOLERANCE:
                problems.append(f"descriptors {snap['fds']} = {snap['fds_base']} + 2 x {snap['servers']} servers, "
                                f"baseline {self.baseline['fds_base']} (+{snap['fds_base'] - self.baseline['fds_base']}): "
                                f"{self.agent.fd_kinds()}")
            waits = self.agent.close_wait()
            if waits:
                problems.append(f"{len(waits)} sockets of the agent in CLOSE-WAIT: {waits[:3]}")
            orphans = env.unix_sockets_without_peer(self.agent.pid)
            if orphans:
                problems.append(f"{len(orphans)} Unix sockets of the agent whose peer is gone: {orphans[:3]}")
            if snap["rss"] > self.baseline["rss"] + RSS_TOLERANCE_MIB:
                problems.append(f"RSS {snap['rss']:.0f} MiB > baseline {self.baseline['rss']:.0f} + {RSS_TOLERANCE_MIB} MiB")
            if not problems or time.monotonic() > deadline:
                self.final = snap
                for problem in problems:
                    self.fail(f"not back to baseline within {SETTLE_SECONDS} s: {problem}")
                return
            await asyncio.sleep(0.25)

    async def check_ledger(self, extra_ids=()):
        rows = await self.pg.sql("SELECT id, count(*) AS n FROM ledger WHERE id LIKE $1 GROUP BY id", f"{self.code}:%")
        present = {r["id"]: r["n"] for r in rows}
        outcome = self.ledger.outcome
        lost = [i for i, o in outcome.items() if o == "acked" and present.get(i, 0) == 0]
        dup = [i for i, n in present.items() if n > 1]
        phantom = [i for i, o in outcome.items() if o == "failed" and present.get(i, 0) > 0]
        stray = [i for i in present if i not in outcome]
        pending = [i for i, o in outcome.items() if o == "pending"]
        unknown = [i for i, o in outcome.items() if o in ("unknown", "pending")]
        unknown_present = sum(1 for i in unknown if present.get(i, 0) > 0)
        counts = self.ledger.counts()
        self.ledger_summary = {
            "acked": counts["acked"], "failed": counts["failed"], "unknown_ids": len(unknown),
            "unknown_present": unknown_present, "unknown_ops": self.ledger.unknown_ops + (1 if pending else 0),
            "lost": len(lost), "dup": len(dup), "phantom": len(phantom), "stray": len(stray),
        }
        if lost:
            self.fail(f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}")
        if dup:
            self.fail(f"{len(dup)} writes present more than once, e.g. {[(i, present[i]) for i in dup[:5]]}")
        if phantom:
            self.fail(f"{len(phantom)} writes that cannot have committed are present, e.g. {phantom[:5]}")
        if stray:
            self.fail(f"{len(stray)} rows no client wrote, e.g. {stray[:5]}")
        if pending:
            self.note(f"{len(pending)} writes still pending when the load stopped (counted as unknown)")
        if self.ledger_summary["unknown_ops"] > self.budget:
            self.fail(f"{self.ledger_summary['unknown_ops']} operations with an unknown outcome > budget {self.budget}")

    def check_load(self):
        ledger = self.ledger
        if ledger.violations:
            self.fail(f"{len(ledger.violations)} reads of bytes that are not the client's own, e.g. {ledger.violations[:3]}")
        if ledger.anomalies:
            self.fail(f"{len(ledger.anomalies)} protocol anomalies, e.g. {ledger.anomalies[:3]}")
        if ledger.hangs:
            self.fail(f"{ledger.hangs} operations got no answer within {load.OP_TIMEOUT:.0f} s (or never ended)")
        if ledger.cancelled_in_load:
            self.fail(f"{ledger.cancelled_in_load} statements of the load were cancelled (57014) though nobody cancelled them")
        if ledger.acked == 0:
            self.fail("the load made no acknowledged write at all")
        elif self.load_started and self.load_stopped:
            gap = ledger.longest_gap(self.load_started, self.load_stopped - 1.0)
            if gap > MAX_ACK_GAP:
                self.fail(f"the load went {gap:.1f} s without an acknowledged write")

    async def finish(self):
        """The checks every scenario shares, after its load has stopped and its faults have ended."""
        await self.settle()
        await self.check_ledger()
        self.check_load()

    def verdict(self):
        s = self.ledger_summary or {}
        head = heading(self.code, self.title)
        parts = []
        if s:
            parts.append(f"ledger {s['acked']} acked, {s['failed']} failed, {s['lost']} lost, {s['dup']} dup, "
                         f"{s['phantom']} phantom, {s['unknown_ops']} unknown ({s['unknown_ids']} ids, "
                         f"{s['unknown_present']} committed) <= {self.budget} budget; {self.faults} faults")
        if self.baseline and self.final:
            parts.append(f"fds {self.baseline['fds']}→{self.final['fds']} "
                         f"(base {self.baseline['fds_base']}→{self.final['fds_base']} + 2/server, "
                         f"{self.final['servers']} servers), rss {self.baseline['rss']:.0f}→{self.final['rss']:.0f} MiB")
        detail = "; ".join(parts)
        if self.failures:
            return f"{head} FAIL: {self.failures[0]}" + (f"   ({detail})" if detail else "")
        return f"{head} ok   ({detail})"

    def details(self):
        lines = []
        for failure in self.failures[1:]:
            lines.append(f"    FAIL: {failure}")
        for text in self.notes:
            lines.append(f"    {text}")
        ledger = self.ledger
        if ledger.errors:
            histogram = ", ".join(f"{k} x{v}" for k, v in sorted(ledger.errors.items(), key=lambda kv: -kv[1]))
            lines.append(f"    load: {ledger.ops} operations, {ledger.connects} connects ({ledger.connect_failures} refused); errors: {histogram}")
            for key, example in sorted(ledger.error_examples.items())[:8]:
                lines.append(f"      {key}: {example}")
        elif ledger.ops:
            lines.append(f"    load: {ledger.ops} operations, {ledger.connects} connects, no errors")
        return lines


# MARK: scenarios


async def f1_terminate(s):
    await s.agent_up()
    s.load_up()
    await s.sleep(1)
    end = time.monotonic() + s.options.seconds
    while time.monotonic() < end:
        await s.sleep(2)
        backends = await s.pg.agent_backends()
        if not backends:
            continue
        for pid, *_ in s.rng.sample(backends, min(len(backends), s.rng.randint(1, 3))):
            rows = await s.pg.sql("SELECT pg_terminate_backend($1)", pid)
            if rows[0][0]:
                s.faults += 1
    await s.load_down()
    # The pool idle: every backend terminated while no client holds one (the pool probes its upstream when it
    # has lost every server), then a lone client's query, 4 times.
    lone = []
    for _ in range(4):
        for pid, *_ in await s.pg.agent_backends():
            rows = await s.pg.sql("SELECT pg_terminate_backend($1)", pid)
            if rows[0][0]:
                s.faults += 1
        await s.sleep(3.5)
        try:
            conn = await wire.Conn.open("127.0.0.1", s.options.agent_port, "app", "postgres")
            result = await conn.simple("SELECT 'lone'")
            lone.append("ok" if result.rows == [["lone"]] else f"{result.error or result.rows}")
            await conn.close()
        except (wire.Lost, wire.ServerError, wire.Anomaly) as error:
            lone.append(f"{type(error).__name__}: {error}")
    s.note(f"then 4 times with the pool idle: every backend terminated, 3.5 s later a lone query: {lone}")
    if any(outcome != "ok" for outcome in lone):
        s.fail(f"a lone query after the idle pool's backends were terminated failed: {lone}")
    s.budget = s.faults
    await s.finish()


async def f2_restart(s):
    await s.agent_up()
    s.load_up()
    # Some restarts come straight back, some stay down a while (the pool sees the upstream down meanwhile).
    outages = [0, 1, 0, 3, 5]
    gap = max(2.0, s.options.seconds / len(outages))
    away = []
    for outage in outages:
        await s.sleep(gap * 0.8)
        away.append(await s.pg.restart_immediate(outage))
        s.faults += 1
        s.budget += SIZE + OVERFLOW
    await s.sleep(max(3.0, gap * 0.5))
    s.note(f"PostgreSQL was away {', '.join(f'{a:.1f}' for a in away)} s per restart")
    await s.load_down()
    await s.finish()


async def f3_network(s):
    netns = env.Netns()
    reason = await netns.create()
    if reason:
        raise Skip(reason)
    try:
        await s.pg.stop("fast")
        s.pg.allow_network(f"{netns.host_ip}/32")
        await s.pg.start(netns.name, netns.ns_ip)
        await s.pg.wait_ready()
        upstream = f"host={netns.ns_ip} port={s.pg.port} user={env.AGENT_USER} dbname=postgres"
        await s.agent_up(upstream=upstream)
        s.load_up()
        phase = max(3.0, (s.options.seconds - 8) / 3)
        await s.sleep(1)
        await netns.impair()
        rates = []

        def rate(label, since):
            now = time.monotonic()
            acked = sum(1 for t in s.ledger.ack_times if since <= t <= now)
            rates.append(f"{label} {acked / max(0.1, now - since):.0f}/s")

        before = time.monotonic()
        rate("clean", s.load_started)
        await s.sleep(phase)
        rate("impaired", before)
        for outage in ("blackout", "link down"):
            if outage == "blackout":
                await netns.blackout()
            else:
                await netns.link(False)
            s.faults += 1
            s.budget += SIZE + OVERFLOW
            before = time.monotonic()
            await s.sleep(4)
            rate(outage, before)
            if outage == "blackout":
                await netns.impair()
            else:
                await netns.link(True)
            before = time.monotonic()
            await s.sleep(phase)
            rate("impaired", before)
        s.note(f"{netns.describe()}; a 4 s blackout, then 4 s with the veth down; {await netns.dropped()} packets dropped")
        s.note("acked operations per second by phase: " + ", ".join(rates))
        await netns.clear()
        await s.sleep(3)
        await s.load_down()
        await s.finish()
    finally:
        if s.agent:
            await s.agent.stop()
        await s.pg.stop("fast")
        await netns.delete()
        await s.pg.ensure_home()


ABORTERS = 48


async def f4_aborts(s):
    # A client limit above what the load and the aborting clients need; a flood past it at the end.
    limit = s.options.clients + ABORTERS + 52
    accepted, complaint = await s.config_accepted(agent_extra=f"max_client_conn = {limit}")
    if accepted:
        await s.agent_up(agent_extra=f"max_client_conn = {limit}")
    else:
        s.fail(f"the agent has no max_client_conn: {complaint}")
        await s.agent_up()
    s.load_up()
    total = s.options.aborts
    done = {"n": 0, "fin": 0, "rst": 0, "tx": 0, "copy": 0, "pipe": 0, "errors": 0}
    next_index = {"n": 0}
    started = time.monotonic()
    cap = max(300.0, s.options.seconds * 4)

    async def aborter(worker):
        rng = random.Random(f"{s.options.seed}:abort:{worker}")
        client = 100000 + worker
        while next_index["n"] < total and time.monotonic() - started < cap:
            next_index["n"] += 1
            kind = rng.choice(("tx", "copy", "pipe"))
            rst = rng.random() < 0.5
            when = rng.choice(("sent", "answered", "later"))
            try:
                conn = await wire.Conn.open("127.0.0.1", s.options.agent_port, "app", "postgres")
            except (wire.Lost, wire.ServerError, wire.Anomaly) as error:
                done["errors"] += 1
                s.ledger.note_error(error, client)
                await asyncio.sleep(0.05)
                continue
            try:
                if kind == "tx":
                    ident = s.ledger.new_id(client)
                    s.ledger.failed_ids([ident])
                    conn.send(wire.query("BEGIN"))
                    conn.send(wire.query(f"INSERT INTO ledger (id, client, marker, kind) VALUES ('{ident}', {client}, 'abort', 'abort-tx')"))
                    if when != "sent":
                        await conn.results(wire.Result())
                        await conn.results(wire.Result())
                        conn.send(wire.query(f"SELECT pg_sleep({rng.choice((0.01, 0.05))})"))
                    if when == "later":
                        await asyncio.sleep(rng.uniform(0, 0.03))
                elif kind == "copy":
                    idents = [s.ledger.new_id(client) for _ in range(3)]
                    s.ledger.failed_ids(idents)
                    conn.send(wire.query("COPY ledger (id, client, marker, kind) FROM STDIN"))
                    if when != "sent":
                        result = await conn.results(wire.Result(), expect_copy_in=True)
                        if not result.copy_in:
                            raise wire.Anomaly(f"COPY answered {result.tags} {result.error}")
                    for ident in idents[:2]:
                        conn.send(wire.copy_data(f"{ident}\t{client}\tabort\tabort-copy\n"))
                    if when == "later":
                        await conn.drain()
                        await asyncio.sleep(rng.uniform(0, 0.03))
                else:
                    first, second = s.ledger.new_id(client), s.ledger.new_id(client)
                    s.ledger.failed_ids([first, second])
                    insert = "INSERT INTO ledger (id, client, marker, kind) VALUES ($1, $2, 'abort', 'abort-pipe')"
                    conn.send(wire.parse("", "BEGIN") + wire.bind("", "") + wire.execute()
                              + wire.parse("", insert) + wire.bind("", "", (first, str(client))) + wire.execute()
                              + wire.parse("", "SELECT pg_sleep(0.02)") + wire.bind("", "") + wire.execute() + wire.sync()
                              + wire.parse("", insert) + wire.bind("", "", (second, str(client))) + wire.execute() + wire.sync())
                    if when != "sent":
                        await conn.results(wire.Result())
                    if when == "later":
                        await asyncio.sleep(rng.uniform(0, 0.03))
            except (wire.Lost, wire.ServerError, wire.Anomaly) as error:
                done["errors"] += 1
                s.ledger.note_error(error, client)
            conn.abort(rst=rst)
            done["n"] += 1
            done["rst" if rst else "fin"] += 1
            done[kind] += 1
            s.faults += 1

    await s.sleep(2)
    rss_before = s.agent.rss_mib()
    started = time.monotonic()
    await asyncio.gather(*(aborter(w) for w in range(ABORTERS)))
    elapsed = time.monotonic() - started
    await s.sleep(1)
    rss_after = s.agent.rss_mib()
    per_connection = (rss_after - rss_before) * 1024 / max(1, done["n"])
    s.note(f"agent RSS {rss_before:.0f} → {rss_after:.0f} MiB across the aborts ({per_connection:.2f} KiB per aborted connection)")
    # 1 KiB per aborted connection, and at least 8 MiB (RSS moves by whole arenas; fewer aborts are noise).
    if rss_after - rss_before > max(8.0, done["n"] / 1024):
        s.fail(f"agent memory grows with every aborted client: RSS {rss_before:.0f} → {rss_after:.0f} MiB over "
               f"{done['n']} aborts, {per_connection:.1f} KiB each (the load's clients were the same all along)")
    s.note(f"{done['n']} aborts in {elapsed:.0f} s ({done['fin']} FIN, {done['rst']} RST; {done['tx']} mid-transaction, "
           f"{done['copy']} mid-COPY, {done['pipe']} mid-pipeline; {done['errors']} aborting clients saw an error first)")
    if done["n"] < total:
        s.fail(f"only {done['n']} of {total} aborts within {cap:.0f} s")

    # A flood of idle clients on top of the load, 50 more than max_client_conn leaves room for.
    flood = limit - s.options.clients + 50
    opened = await asyncio.gather(*(wire.Conn.open("127.0.0.1", s.options.agent_port, "app", "postgres")
                                    for _ in range(flood)), return_exceptions=True)
    peak = (await s.agent.call("stats"))["agent"]["clients"]
    admitted = [c for c in opened if isinstance(c, wire.Conn)]
    refused = [c for c in opened if isinstance(c, wire.ServerError) and c.sqlstate == "53300"]
    other = [c for c in opened if not isinstance(c, wire.Conn) and c not in refused]
    for conn in admitted:
        await conn.close()
    s.note(f"flood of {flood} idle clients on top of {s.options.clients} load clients (max_client_conn "
           f"{limit if accepted else 'not supported'}): {len(admitted)} admitted, {len(refused)} refused with 53300, "
           f"{len(other)} other{f' ({other[0]!r})' if other else ''}; the agent counted {peak} clients")
    if accepted:
        if not refused:
            s.fail(f"max_client_conn {limit} did not refuse anyone: {len(admitted)} of a flood of {flood} admitted next to "
                   f"{s.options.clients} load clients, {peak} clients at once")
        elif peak > limit:
            s.fail(f"{peak} clients at once with max_client_conn {limit}")
        elif "too many clients" not in refused[0].text:
            s.fail(f"max_client_conn refusal says {refused[0]}")
    await s.sleep(1)
    await s.load_down()
    await s.finish()


async def f5_drain(s):
    await s.agent_up()
    s.load_up()
    await s.sleep(2)
    end = time.monotonic() + s.options.seconds
    durations = []
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            result = await s.agent.call("drain", pool="postgres", deadline_s=10)
            durations.append(time.monotonic() - started)
        except (RuntimeError, OSError, asyncio.TimeoutError) as error:
            s.fail(f"drain failed: {error}")
        s.faults += 1
        await s.sleep(s.rng.uniform(0.3, 1.0))
        await s.agent.call("resume", pool="postgres")
        await s.sleep(s.rng.uniform(1.5, 3.0))
    if durations:
        s.note(f"{len(durations)} drains, each took {min(durations):.2f}–{max(durations):.2f} s")
    await s.load_down()
    await s.finish()


async def f6_resize(s):
    await s.agent_up()
    s.load_up()
    await s.sleep(1)
    end = time.monotonic() + s.options.seconds
    cycle = [5, 50, 20]
    index = 0
    peaks = {}
    while time.monotonic() < end or cycle[index % 3] != 5:
        size = cycle[index % 3]
        index += 1
        result = await s.agent.call("resize", pool="postgres", size=size)
        s.faults += 1
        if result.get("size") != size:
            s.fail(f"resize to {size} answered {result}")
        await s.sleep(2.5)
        pool = (await s.agent.call("stats", pool="postgres"))["pools"][0]
        opened = pool["servers"]["open"]
        peaks[size] = max(peaks.get(size, 0), opened)
        if opened > size + pool["max_overflow"]:
            s.fail(f"2.5 s after resize to {size}, {opened} servers are open")
        if pool["size"] != size:
            s.fail(f"stats say size {pool['size']} after resize to {size}")
    s.note(f"{s.faults} resizes; servers open 2.5 s after each: " + ", ".join(f"size {k}: up to {v}" for k, v in sorted(peaks.items())))
    await s.load_down()
    await s.finish()


async def f7_recycle(s):
    await s.agent_up()
    s.load_up()
    await s.sleep(1)
    before = (await s.agent.call("stats", pool="postgres"))["pools"][0]["counters"]
    result = await s.agent.call("set-recycle", pool="postgres", max_lifetime_s=1)
    s.note(f"set-recycle: {result}")
    await s.sleep(s.options.seconds)
    after = (await s.agent.call("stats", pool="postgres"))["pools"][0]["counters"]
    connects = after["server_connects"] - before["server_connects"]
    recycles = after["recycles"] - before["recycles"]
    s.faults = connects
    s.note(f"{connects} server connects and {recycles} recycles counted during {s.options.seconds:.0f} s")
    if connects < s.options.seconds:
        s.fail(f"only {connects} new server connections in {s.options.seconds:.0f} s with max_lifetime 1 s")
    ages = [b[3] for b in await s.pg.agent_backends()]
    if ages and max(ages) > 10:
        s.fail(f"a backend of the agent is {max(ages):.0f} s old with max_lifetime 1 s")
    await s.load_down()
    await s.sleep(3)
    ages = [round(b[3], 1) for b in await s.pg.agent_backends()]
    if ages and max(ages) > 5:
        s.fail(f"3 s after the load, backends of the agent are {ages} s old with max_lifetime 1 s")
    await s.finish()


async def hold_transaction(s, client, hold, outcome):
    """BEGIN; INSERT; idle for `hold` s; COMMIT, on its own connection; records the write in the ledger."""
    try:
        conn = await wire.Conn.open("127.0.0.1", s.options.agent_port, "app", "postgres")
    except (wire.Lost, wire.ServerError, wire.Anomaly) as error:
        outcome.append(("connect", str(error)))
        return
    ident = s.ledger.new_id(client)
    commit_requested = False
    try:
        for sql in ("BEGIN", f"INSERT INTO ledger (id, client, marker, kind) VALUES ('{ident}', {client}, 'holder', 'hold')"):
            result = await conn.simple(sql)
            if result.error:
                raise result.error
        try:
            kind, body = await asyncio.wait_for(conn.read(), hold)
            raise (wire.ServerError(wire.fields(body)) if kind == b"E" else wire.Anomaly(f"unexpected {kind!r} while idle"))
        except asyncio.TimeoutError:
            pass
        commit_requested = True
        result = await conn.simple("COMMIT")
        if result.error:
            raise result.error
        if result.tags == ["COMMIT"]:
            s.ledger.acked_ids([ident])
            outcome.append(("committed", ""))
        else:
            s.ledger.failed_ids([ident])
            outcome.append(("rolled back", str(result.tags)))
    except (wire.Lost, wire.ServerError, wire.Anomaly) as error:
        s.ledger.settle([ident], commit_requested, error)
        outcome.append(("ended", f"{type(error).__name__}: {error}"))
    finally:
        conn.abort()


async def f8_agent_stop(s):
    await s.agent_up()
    s.load_up()
    await s.sleep(max(2.0, s.options.seconds * 0.3))
    # Open transactions at SIGTERM: some commit within shutdown_timeout, some would need longer.
    short, long = [], []
    holders = [asyncio.create_task(hold_transaction(s, 200000 + i, 1.5, short)) for i in range(5)]
    holders += [asyncio.create_task(hold_transaction(s, 200100 + i, 30, long)) for i in range(3)]
    await s.sleep(0.5)
    elapsed, status = await s.agent.signal_and_wait(signal.SIGTERM, 30)
    s.faults += 1
    s.budget += s.options.clients
    if elapsed is None:
        s.fail("the agent did not exit within 30 s of SIGTERM (shutdown_timeout 5 s)")
        s.agent.process.kill()
        await s.agent.process.wait()
    else:
        s.note(f"SIGTERM: exited {status} after {elapsed:.1f} s (shutdown_timeout 5 s)")
        if elapsed > 5 + 3:
            s.fail(f"SIGTERM: the agent took {elapsed:.1f} s to exit, shutdown_timeout is 5 s")
        if status != 0:
            s.fail(f"SIGTERM: the agent exited with status {status}")
    baseline = s.baseline
    await s.agent.start()
    await asyncio.gather(*holders)
    s.note(f"transactions open at SIGTERM: short ones {sorted(o for o, _ in short)}, long ones {sorted(o for o, _ in long)}")
    if [o for o, _ in short].count("committed") != len(short):
        s.fail(f"a 1.5 s transaction open at SIGTERM did not get to commit within shutdown_timeout 5 s: {short}")
    await s.sleep(max(2.0, s.options.seconds * 0.35))
    elapsed, status = await s.agent.signal_and_wait(signal.SIGKILL, 10)
    s.faults += 1
    s.budget += s.options.clients
    await s.agent.start()
    s.note("kill -9, then a restart on the same port and control socket")
    await s.sleep(max(3.0, s.options.seconds * 0.35))
    s.baseline = baseline
    await s.load_down()
    await s.finish()


async def f9_cancels(s):
    victims, bystanders, decoys = 100, 40, 50
    pool_size = victims + bystanders + 10
    s.extra_pools = ["cancels"]
    await s.agent_up(pools_extra=f"""
[pools.cancels]
upstream = "host={s.pg.socket_dir} port={s.pg.port} user={env.AGENT_USER} dbname=postgres"
size = {pool_size}
""")
    s.load_up()
    await s.sleep(1)
    rounds = max(3, int(s.options.seconds // 4))
    wrong = []

    for round_number in range(rounds):
        conns = {}
        opened = await asyncio.gather(*(wire.Conn.open("127.0.0.1", s.options.agent_port, "app", "cancels")
                                        for _ in range(victims + bystanders)), return_exceptions=True)
        broken = [c for c in opened if isinstance(c, BaseException)]
        if broken:
            s.fail(f"round {round_number}: {len(broken)} cancel-pool clients could not log in: {broken[0]}")
            for c in opened:
                if not isinstance(c, BaseException):
                    c.abort()
            break
        victim_conns, bystander_conns = opened[:victims], opened[victims:]
        victim_ids = []
        for index, conn in enumerate(victim_conns):
            ident = s.ledger.new_id(300000 + index)
            victim_ids.append(ident)
            conn.send(wire.query(f"INSERT INTO ledger (id, client, marker, kind) VALUES ('{ident}', {300000 + index}, 'victim', 'victim'); "
                                 f"SELECT pg_sleep(6) /* victim {index} */"))
        markers = []
        for index, conn in enumerate(bystander_conns):
            marker = f"by{round_number}x{index}"
            markers.append(marker)
            conn.send(wire.query(f"SELECT '{marker}'::text, pg_sleep(2.5) /* bystander {index} */"))
        # Every victim and bystander is running on a server before the cancels go out.
        deadline = time.monotonic() + 10
        while True:
            running = [b for b in await s.pg.agent_backends() if b[1] == "active" and "/* victim" in b[2]]
            if len(running) >= victims or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if len(running) < victims:
            s.note(f"round {round_number}: only {len(running)} of {victims} victims running when the cancels went out")
        sent = time.monotonic()
        rng = s.rng
        cancels = [wire.send_cancel("127.0.0.1", s.options.agent_port, conn.key) for conn in victim_conns]
        cancels += [wire.send_cancel("127.0.0.1", s.options.agent_port, (rng.randrange(1, 1 << 31), rng.randrange(-(1 << 31), 1 << 31)))
                    for _ in range(decoys)]
        outcomes = await asyncio.gather(*cancels, return_exceptions=True)
        failed_sends = [o for o in outcomes if isinstance(o, BaseException)]
        if failed_sends:
            s.fail(f"round {round_number}: {len(failed_sends)} cancel requests could not be sent: {failed_sends[0]!r}")
        s.faults += victims

        async def victim_result(conn, ident):
            try:
                result = await asyncio.wait_for(conn.results(wire.Result()), 15)
            except (wire.Lost, wire.ServerError, wire.Anomaly, asyncio.TimeoutError) as error:
                s.ledger.settle([ident], True, error)
                return ("lost", repr(error), time.monotonic() - sent)
            if result.error is not None:
                s.ledger.note_error(result.error, "victim") if result.error.sqlstate != "57014" else None
                s.ledger.failed_ids([ident])
                return (result.error.sqlstate, result.error.text, time.monotonic() - sent)
            s.ledger.acked_ids([ident])
            return ("finished", "", time.monotonic() - sent)

        async def bystander_result(conn, marker):
            try:
                result = await asyncio.wait_for(conn.results(wire.Result()), 15)
            except (wire.Lost, wire.ServerError, wire.Anomaly, asyncio.TimeoutError) as error:
                return ("lost", repr(error))
            if result.error is not None:
                return (result.error.sqlstate, result.error.text)
            if result.rows != [[marker, ""]]:
                return ("wrong rows", repr(result.rows[:2]))
            return ("ok", "")

        v = await asyncio.gather(*(victim_result(c, i) for c, i in zip(victim_conns, victim_ids)))
        b = await asyncio.gather(*(bystander_result(c, m) for c, m in zip(bystander_conns, markers)))
        for conn in opened:
            await conn.close()
        not_cancelled = [(i, r) for i, r in enumerate(v) if r[0] != "57014"]
        slow = [(i, r) for i, r in enumerate(v) if r[0] == "57014" and r[2] > 4]
        hit = [(i, r) for i, r in enumerate(b) if r[0] != "ok"]
        if not_cancelled:
            s.fail(f"round {round_number}: {len(not_cancelled)} of {victims} cancelled queries were not cancelled, e.g. {not_cancelled[:3]}")
        if slow:
            s.fail(f"round {round_number}: {len(slow)} cancels took more than 4 s, e.g. {slow[:3]}")
        if hit:
            wrong.extend(hit)
            s.fail(f"round {round_number}: {len(hit)} bystanders that nobody cancelled did not finish cleanly, e.g. {hit[:3]}")
        latencies = sorted(r[2] for r in v if r[0] == "57014")
        if latencies:
            s.note(f"round {round_number}: {len(latencies)} victims got 57014 after {latencies[0]:.2f}–{latencies[-1]:.2f} s; "
                   f"{len(b) - len(hit)}/{len(b)} bystanders untouched; {decoys} cancels with made-up keys")
        await s.sleep(1)
    await s.load_down()
    await s.finish()


async def f10_slow_reader(s):
    await s.agent_up()
    s.load_up()
    await s.sleep(3)
    stallers = []
    for _ in range(3):
        conn = await wire.Conn.open("127.0.0.1", s.options.agent_port, "app", "postgres", rcvbuf=4096)
        conn.send(wire.query("SELECT repeat('x', 1000) FROM generate_series(1, 100000)"))
        stallers.append(conn)
    before = s.agent.rss_mib()
    hold = max(8.0, s.options.seconds * 0.5)
    started = time.monotonic()
    peak = before
    while time.monotonic() - started < hold:
        await asyncio.sleep(0.5)
        peak = max(peak, s.agent.rss_mib())
    backends = [b for b in await s.pg.agent_backends() if "generate_series(1, 100000)" in b[2]]
    gap = s.ledger.longest_gap(started, time.monotonic())
    acked_during = sum(1 for t in s.ledger.ack_times if t >= started)
    s.note(f"3 clients stopped reading 100 MB results for {hold:.0f} s: agent RSS {before:.0f} → peak {peak:.0f} MiB; "
           f"their backends: {[(b[1], b[4]) for b in backends]}; the load acked {acked_during} operations meanwhile "
           f"(longest gap {gap:.1f} s)")
    if peak - before > 64:
        s.fail(f"agent RSS grew {peak - before:.0f} MiB while 3 clients did not read their 100 MB results (no backpressure)")
    if acked_during == 0 or gap > 5:
        s.fail(f"the rest of the load stalled while 3 clients did not read (longest gap {gap:.1f} s)")
    stallers[0].abort(rst=False)
    stallers[1].abort(rst=True)
    stallers[2].send(wire.terminate())
    stallers[2].abort(rst=False)
    s.faults = 3
    await s.sleep(3)
    await s.load_down()
    await s.finish()


class SilentListener:
    """A TCP port that accepts connections and never says anything: an upstream that does not answer."""

    def __init__(self):
        self.accepted = 0
        self.server = None
        self.writers = []

    async def start(self):
        async def handle(reader, writer):
            self.accepted += 1
            self.writers.append(writer)
            try:
                await reader.read()
            except OSError:
                pass
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self):
        for writer in self.writers:
            writer.close()
        self.server.close()


async def expect_fatal(conn, sqlstate, low, high, started, words=()):
    """Reads until the agent ends `conn`; checks the error's SQLSTATE, its timing and its words."""
    try:
        while True:
            kind, body = await asyncio.wait_for(conn.read(), high + 3)
            if kind == b"E":
                error = wire.fields(body)
                break
    except asyncio.TimeoutError:
        return f"no error within {high + 3:.0f} s"
    except wire.Lost:
        return f"connection closed after {time.monotonic() - started:.1f} s without an ErrorResponse"
    elapsed = time.monotonic() - started
    problems = []
    if error.get("C") != sqlstate:
        problems.append(f"SQLSTATE {error.get('C')} instead of {sqlstate}")
    if not low <= elapsed <= high:
        problems.append(f"after {elapsed:.1f} s, expected {low}–{high} s")
    missing = [w for w in words if w not in error.get("M", "")]
    if missing:
        problems.append(f"message lacks {missing}")
    text = f"{error.get('V', error.get('S'))} {error.get('C')} after {elapsed:.1f} s: {error.get('M')}"
    return ("; ".join(problems) + " — " + text) if problems else ("ok", text)


async def f11_timeouts(s):
    netns = env.Netns()
    reason = await netns.create()
    try:
        await f11_body(s, netns if reason is None else None, reason)
    finally:
        await netns.delete()


async def f11_body(s, netns, netns_reason):
    silent = SilentListener()
    silent_port = await silent.start()
    up = f"host={s.pg.socket_dir} port={s.pg.port} user={env.AGENT_USER} dbname=postgres"
    s.extra_pools = ["wt", "qt", "itt", "cit", "ct", "ctnet"]
    blackholed = ""
    if netns:
        # An address behind a link that drops every packet: the SYN is never answered.
        await netns.blackout()
        blackholed = f"""
[pools.ctnet]
upstream = "host={netns.ns_ip} port=5432 user={env.AGENT_USER} dbname=postgres"
size = 2
connect_timeout = "2s"
"""
    await s.agent_up(agent_extra='login_timeout = "2s"', pools_extra=blackholed + f"""
[pools.wt]
upstream = "{up}"
size = 2
wait_timeout = "1s"

[pools.qt]
upstream = "{up}"
size = 2
query_timeout = "1s"

[pools.itt]
upstream = "{up}"
size = 2
idle_in_transaction_timeout = "1s"

[pools.cit]
upstream = "{up}"
size = 2
client_idle_timeout = "2s"

[pools.ct]
upstream = "host=127.0.0.1 port={silent_port} user={env.AGENT_USER} dbname=postgres"
size = 2
connect_timeout = "2s"
""")
    s.load_up()
    await s.sleep(1)
    port = s.options.agent_port
    results = {}

    def insert(client, ident):
        return f"INSERT INTO ledger (id, client, marker, kind) VALUES ('{ident}', {client}, 'timeout', 'timeout')"

    # wait_timeout: both servers of pool wt held, a third client's statement waits 1 s.
    holders = [await wire.Conn.open("127.0.0.1", port, "app", "wt") for _ in range(2)]
    for holder in holders:
        holder.send(wire.query("BEGIN; SELECT pg_sleep(3)"))
    await asyncio.sleep(0.5)
    conn = await wire.Conn.open("127.0.0.1", port, "app", "wt")
    ident = s.ledger.new_id(400001)
    started = time.monotonic()
    conn.send(wire.query(insert(400001, ident)))
    outcome = await expect_fatal(conn, "53300", 0.8, 2.5, started, words=('"wt"', "wait_timeout"))
    s.ledger.failed_ids([ident])
    results["wait_timeout"] = outcome
    for holder in holders:
        await holder.results(wire.Result())
        await holder.simple("COMMIT")
        await holder.close()
    conn.abort()

    # query_timeout: the running statement is cancelled, the session goes on.
    conn = await wire.Conn.open("127.0.0.1", port, "app", "qt")
    ident = s.ledger.new_id(400002)
    started = time.monotonic()
    result = await asyncio.wait_for(conn.simple(f"{insert(400002, ident)}; SELECT pg_sleep(10)"), 15)
    elapsed = time.monotonic() - started
    s.ledger.failed_ids([ident])
    if result.error is None or result.error.sqlstate != "57014" or not 0.8 <= elapsed <= 3.5:
        results["query_timeout"] = f"expected 57014 within 0.8–3.5 s, got {result.error} after {elapsed:.1f} s"
    else:
        after = await conn.simple("SELECT 'still here'")
        if after.rows != [["still here"]]:
            results["query_timeout"] = f"the session did not go on after the cancel: {after.rows} {after.error}"
        else:
            results["query_timeout"] = ("ok", f"{result.error} after {elapsed:.1f} s; the session goes on")
    await conn.close()

    # idle_in_transaction_timeout: a transaction left open is ended, its write rolled back.
    conn = await wire.Conn.open("127.0.0.1", port, "app", "itt")
    ident = s.ledger.new_id(400003)
    await conn.simple("BEGIN")
    await conn.simple(insert(400003, ident))
    s.ledger.failed_ids([ident])
    started = time.monotonic()
    results["idle_in_transaction_timeout"] = await expect_fatal(conn, "25P03", 0.8, 3.0, started, words=('"itt"',))
    conn.abort()

    # client_idle_timeout: an idle session is closed.
    conn = await wire.Conn.open("127.0.0.1", port, "app", "cit")
    await conn.simple("SELECT 1")
    started = time.monotonic()
    results["client_idle_timeout"] = await expect_fatal(conn, "57P05", 1.8, 4.0, started, words=('"cit"',))
    conn.abort()

    # login_timeout: a client that connects and sends nothing, and one that sends half a startup packet.
    for label, data in (("login_timeout (silent)", b""), ("login_timeout (half a startup packet)", wire.startup("app", "postgres")[:12])):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if data:
            writer.write(data)
        started = time.monotonic()
        raw = wire.Conn(reader, writer)
        results[label] = await expect_fatal(raw, "08006", 1.8, 4.0, started, words=("login timeout",))
        raw.abort()

    # connect_timeout: an upstream that accepts TCP and never answers, and one whose SYN is dropped.
    async def unreachable(pool, client):
        started = time.monotonic()
        try:
            conn = await wire.Conn.open("127.0.0.1", port, "app", pool, timeout=20)
            ident = s.ledger.new_id(client)
            s.ledger.failed_ids([ident])
            conn.send(wire.query(insert(client, ident)))
            outcome = await expect_fatal(conn, "08006", 1.5, 5.0, started, words=(f'"{pool}"',))
            conn.abort()
            return outcome
        except wire.ServerError as error:
            elapsed = time.monotonic() - started
            if error.sqlstate != "08006" or not 1.5 <= elapsed <= 5.0 or f'"{pool}"' not in error.text:
                return f"expected 08006 naming the pool within 1.5–5 s, got {error} after {elapsed:.1f} s"
            return ("ok", f"at login: {error} after {elapsed:.1f} s")
        except wire.Lost as error:
            return f"connection lost without an error: {error}"

    outcome = await unreachable("ct", 400004)
    if silent.accepted == 0:
        outcome = f"the agent never tried the unreachable upstream ({outcome})"
    results["connect_timeout (silent upstream)"] = outcome
    if netns:
        results["connect_timeout (SYN dropped)"] = await unreachable("ctnet", 400005)
    else:
        s.note(f"connect_timeout with dropped SYNs not tried: {netns_reason}")

    health = await s.agent.call("health")
    pools = {p["pool"]: p for p in health["pools"]}
    main = pools.get("postgres", {})
    if main.get("status") != "ok":
        s.fail(f"after the timeouts pool postgres is {main.get('status')}: {main}")
    s.note(f"health: {health['status']}; " + ", ".join(f"{name} {p['status']}" for name, p in pools.items()))
    for name, outcome in results.items():
        s.faults += 1
        if isinstance(outcome, tuple):
            s.note(f"{name}: ok — {outcome[1]}")
        else:
            s.fail(f"{name}: {outcome}")
    await s.sleep(2)
    await s.load_down()
    await silent.stop()
    await s.finish()


SCENARIOS = [
    ("F1", "terminate backends every 2s", f1_terminate),
    ("F2", "restart postgres -m immediate x5", f2_restart),
    ("F3", "upstream delay, loss and drops (netns)", f3_network),
    ("F4", "client aborts mid-tx/COPY/pipeline", f4_aborts),
    ("F5", "drain/resume every few seconds", f5_drain),
    ("F6", "resize 20→5→50→20 in a loop", f6_resize),
    ("F7", "set-recycle max_lifetime 1s", f7_recycle),
    ("F8", "SIGTERM and kill -9 of the agent", f8_agent_stop),
    ("F9", "100 concurrent cancels per round", f9_cancels),
    ("F10", "client stops reading 100 MB", f10_slow_reader),
    ("F11", "every timeout fires", f11_timeouts),
]


async def run_one(options, pg, code, title, function):
    s = Run(options, pg, code, title)
    say(f"{code}: {title} …")
    started = time.monotonic()
    try:
        await pg.ensure_home()
        await pg.sql("TRUNCATE ledger")
        await function(s)
    except Skip as skip:
        return "skip", f"{heading(code, title)} skip: {skip}", [], str(skip)
    except Exception:  # noqa: BLE001
        s.fail(f"harness error: {traceback.format_exc().strip().splitlines()[-1]}")
        say(traceback.format_exc())
        if s.load and not s.load.stopping:
            await s.load.stop(timeout=20)
    finally:
        if s.agent:
            await s.agent.stop()
    lines = s.details()
    lines.append(f"    {time.monotonic() - started:.0f} s; agent log: {s.agent.log_path if s.agent else '-'}")
    return ("fail" if s.failures else "ok"), s.verdict(), lines, None


async def main_async(options):
    selected = [s for s in SCENARIOS if not options.only or s[0] in options.only]
    unknown = set(options.only or ()) - {s[0] for s in SCENARIOS}
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(s[0] for s in SCENARIOS)}")
        return 2
    pg = env.Postgres(options.pg_dir, options.pg_port, options.pg_bindir)
    await pg.ensure_home()
    await pg.prepare()
    ci = os.environ.get("CI", "").lower() == "true"
    failed = 0
    summary = []
    for code, title, function in selected:
        status, verdict, lines, skip_reason = await run_one(options, pg, code, title, function)
        print(verdict, flush=True)
        for line in lines:
            print(line, flush=True)
        if status == "fail":
            failed += 1
        elif status == "skip" and ci and not (code == "F3" and skip_reason.startswith("network namespaces are not available")):
            print("    CI=true: a skip for this reason counts as a failure", flush=True)
            status = "FAIL (skip under CI)"
            failed += 1
        summary.append((code, title, status, verdict))
    await pg.ensure_home()
    print()
    print("summary:")
    for code, title, status, verdict in summary:
        reason = verdict.split(" FAIL: ", 1)[1].split("   (")[0] if " FAIL: " in verdict else ""
        reason = verdict.split(" skip: ", 1)[1] if status == "skip" else reason
        print(f"  {code:<4} {title:<40} {status:<5} {reason[:110]}")
    print(f"fault matrix: {len(selected) - failed} of {len(selected)} scenarios passed or were skipped", flush=True)
    return 1 if failed else 0


def add_common_arguments(parser):
    """The options scripts/faults and scripts/soak both pass: the binary, the work place, the cluster, the port
    and the load."""
    parser.add_argument("--binary", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--pg-dir", required=True)
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--pg-bindir", required=True)
    parser.add_argument("--agent-port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=200)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--seconds", type=float, default=25)
    parser.add_argument("--aborts", type=int, default=10000)
    parser.add_argument("--only", type=lambda text: [p.strip().upper() for p in text.split(",") if p.strip()])
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args()
    if options.seed is None:
        options.seed = random.randrange(1 << 32)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    say(f"faults: seed {options.seed}, {options.clients} clients, {options.seconds:.0f} s per scenario")

    async def interruptible():
        # INT or TERM cancel the run: every scenario's `finally` stops its agent and puts the cluster and the
        # network namespace back.
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, task.cancel)
        try:
            return await main_async(options)
        except asyncio.CancelledError:
            say("faults: interrupted")
            return 130
    return asyncio.run(interruptible())


if __name__ == "__main__":
    sys.exit(main())
