#!/usr/bin/env python3
"""Soak: the fault matrix's mixed load through one agent for as long as asked, with faults injected at random,
sampling the agent's RSS, descriptors, servers and a probe's p99 latency every few seconds into a CSV and a PNG.
Run it through scripts/soak.

Faults, one every 10-30 s, at random: terminated backends, drain/resume, a few seconds at size 5 or 50, a burst
of recycling (max_lifetime 1 s for 5 s), a burst of client aborts mid-transaction, and now and then (at most
every 5 minutes) an immediate PostgreSQL restart. The probe is one client of its own running SELECT 1 every
100 ms; its latencies make each sample's p99.

Passes when the line is flat and nothing was lost: after a minute of warm-up, the median of the last fifth of
the samples is within 16 MiB (and 15%) of the first fifth's for RSS and within 4 for the descriptors not held by
servers; and the fault matrix's end checks hold (ledger, no cross-client bytes, back to baseline within 5 s).
"""
import argparse
import asyncio
import csv
import os
import random
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import env  # noqa: E402
import faults  # noqa: E402
import wire  # noqa: E402

SAMPLE_SECONDS = 5
WARMUP_SECONDS = 60
RSS_GROWTH_MIB = 16
RSS_GROWTH_SHARE = 0.15
FD_GROWTH = 4
RESTART_EVERY = 300


class Probe:
    """One client of its own: SELECT 1 every 100 ms; latencies in ms since the last `take()`."""

    def __init__(self, port):
        self.port = port
        self.latencies = []
        self.errors = 0
        self.task = None

    def start(self):
        self.task = asyncio.create_task(self.run())

    async def run(self):
        conn = None
        while True:
            try:
                if conn is None:
                    conn = await wire.Conn.open("127.0.0.1", self.port, "app", "postgres")
                started = time.monotonic()
                result = await asyncio.wait_for(conn.simple("SELECT 1"), 30)
                if result.rows == [["1"]]:
                    self.latencies.append((time.monotonic() - started) * 1000)
                else:
                    self.errors += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a fault ended the connection: count it and reconnect
                self.errors += 1
                conn = None
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.1)

    def take(self):
        latencies, self.latencies = self.latencies, []
        if not latencies:
            return None
        latencies.sort()
        return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


async def abort_burst(s, count):
    """`count` raw clients that begin a transaction, write, and vanish (half FIN, half RST); their rows must
    never appear."""
    s.aborts = getattr(s, "aborts", 0)
    for _ in range(count):
        s.aborts += 1
        try:
            conn = await wire.Conn.open("127.0.0.1", s.options.agent_port, "app", "postgres")
            await conn.simple("BEGIN")
            conn.send(wire.query(f"INSERT INTO ledger (id, client, marker, kind) VALUES ('abort:{s.aborts}', -1, 'abort', 'abort-tx')"))
            await conn.drain()
            conn.abort(rst=s.aborts % 2 == 0)
        except Exception:  # noqa: BLE001 - the agent may refuse or a fault may be on; the burst goes on
            pass


async def inject(s, kind):
    if kind == "terminate":
        backends = await s.pg.agent_backends()
        for pid, *_ in s.rng.sample(backends, min(len(backends), s.rng.randint(1, 3))):
            if (await s.pg.sql("SELECT pg_terminate_backend($1)", pid))[0][0]:
                s.faults += 1
                s.budget += 1
    elif kind == "drain":
        await s.agent.call("drain", pool="postgres", deadline_s=10)
        await asyncio.sleep(s.rng.uniform(0.3, 1.0))
        await s.agent.call("resume", pool="postgres")
        s.faults += 1
    elif kind == "resize":
        await s.agent.call("resize", pool="postgres", size=s.rng.choice((5, 50)))
        await asyncio.sleep(s.rng.uniform(3, 8))
        await s.agent.call("resize", pool="postgres", size=faults.SIZE)
        s.faults += 1
    elif kind == "recycle":
        await s.agent.call("set-recycle", pool="postgres", max_lifetime_s=1)
        await asyncio.sleep(5)
        await s.agent.call("set-recycle", pool="postgres", max_lifetime_s=3600)
        s.faults += 1
    elif kind == "aborts":
        await abort_burst(s, 200)
        s.faults += 1
    elif kind == "restart":
        await s.pg.restart_immediate()
        s.faults += 1
        s.budget += faults.SIZE + faults.OVERFLOW


def rss_flat(first, last):
    allowed = max(RSS_GROWTH_MIB, first * RSS_GROWTH_SHARE)
    return last - first <= allowed, allowed


async def soak(options, pg):
    s = faults.Run(options, pg, "SOAK", f"soak {options.minutes:g} min")
    await pg.ensure_home()
    await pg.sql("TRUNCATE ledger")
    await s.agent_up()
    s.load_up()
    probe = Probe(options.agent_port)
    probe.start()
    started = time.monotonic()
    end = started + options.minutes * 60
    samples = []
    next_fault = started + s.rng.uniform(10, 30)
    last_restart = started
    fault_log = []
    try:
        while time.monotonic() < end:
            await asyncio.sleep(SAMPLE_SECONDS)
            now = time.monotonic()
            fault = ""
            if now >= next_fault:
                kinds = ["terminate", "drain", "resize", "recycle", "aborts"]
                if now - last_restart >= RESTART_EVERY:
                    kinds.append("restart")
                fault = s.rng.choice(kinds)
                if fault == "restart":
                    last_restart = now
                try:
                    await inject(s, fault)
                except Exception as error:  # noqa: BLE001 - a control call may fail while PostgreSQL restarts
                    s.note(f"{fault} at {now - started:.0f} s: {type(error).__name__}: {error}")
                fault_log.append((now - started, fault))
                next_fault = time.monotonic() + s.rng.uniform(10, 30)
            snap = await s.snapshot()
            p99 = probe.take()
            samples.append({
                "t_s": round(now - started, 1), "rss_mib": round(snap["rss"], 1), "fds": snap["fds"],
                "fds_base": snap["fds_base"], "servers": snap["servers"],
                "clients": snap["stats"]["agent"]["clients"], "acked": s.ledger.acked,
                "probe_p99_ms": round(p99, 2) if p99 is not None else "", "fault": fault,
            })
            row = samples[-1]
            faults.say(f"  {row['t_s']:>7.0f} s  rss {row['rss_mib']:>6.1f} MiB  fds {row['fds']:>4} (base {row['fds_base']})  "
                       f"servers {row['servers']:>2}  p99 {row['probe_p99_ms'] or '-':>7} ms  acked {row['acked']}  {fault}")
    finally:
        await probe.stop()
        await s.load_down()
        # The aborted clients' rows are never acked: they must be absent (rolled back).
        try:
            await s.agent.call("set-recycle", pool="postgres", max_lifetime_s=3600)
        except Exception:  # noqa: BLE001
            pass
    await s.finish()
    aborted = await pg.sql("SELECT count(*) FROM ledger WHERE id LIKE 'abort:%'")
    if aborted[0][0]:
        s.fail(f"{aborted[0][0]} writes of aborted transactions are in the table")
    await s.agent.stop()
    return s, samples, fault_log


def write_outputs(samples, fault_log, csv_path, png_path):
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0].keys()))
        writer.writeheader()
        writer.writerows(samples)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [row["t_s"] / 60 for row in samples]
    figure, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    series = [("rss_mib", "RSS (MiB)"), ("fds", "descriptors"), ("servers", "servers open"), ("probe_p99_ms", "probe p99 (ms)")]
    for axis, (key, label) in zip(axes, series):
        points = [(x, row[key]) for x, row in zip(t, samples) if row[key] != ""]
        axis.plot([p[0] for p in points], [p[1] for p in points], linewidth=1)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        for at, kind in fault_log:
            axis.axvline(at / 60, color="red" if kind == "restart" else "grey", alpha=0.25, linewidth=0.8)
    for axis, key in ((axes[0], "rss_mib"), (axes[1], "fds")):
        axis.set_ylim(0, max(row[key] for row in samples) * 1.25)
    axes[-1].set_xlabel("minutes (grey: a fault; red: PostgreSQL restarted)")
    figure.suptitle("poolagent soak: mixed load with faults at random")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    faults.add_common_arguments(parser)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--png", required=True)
    options = parser.parse_args()
    options.seconds = options.minutes * 60
    options.aborts = 0
    options.only = None
    if options.seed is None:
        options.seed = random.randrange(1 << 32)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    faults.say(f"soak: seed {options.seed}, {options.clients} clients, {options.minutes:g} min, a sample every {SAMPLE_SECONDS} s")

    async def run():
        pg = env.Postgres(options.pg_dir, options.pg_port, options.pg_bindir)
        await pg.ensure_home()
        await pg.prepare()
        try:
            return await soak(options, pg)
        finally:
            await pg.ensure_home()

    s, samples, fault_log = asyncio.run(run())
    if not samples:
        print("soak: no samples (shorter than one sample interval)")
        return 1
    plotted = write_outputs(samples, fault_log, options.csv, options.png)
    steady = [row for row in samples if row["t_s"] >= min(WARMUP_SECONDS, samples[-1]["t_s"] / 3)]
    fifth = max(1, len(steady) // 5)
    first, last = steady[:fifth], steady[-fifth:]
    rss_first = statistics.median(row["rss_mib"] for row in first)
    rss_last = statistics.median(row["rss_mib"] for row in last)
    fds_first = statistics.median(row["fds_base"] for row in first)
    fds_last = statistics.median(row["fds_base"] for row in last)
    flat, allowed = rss_flat(rss_first, rss_last)
    if not flat:
        s.fail(f"RSS grew from {rss_first:.1f} to {rss_last:.1f} MiB (more than {allowed:.1f})")
    if fds_last - fds_first > FD_GROWTH:
        s.fail(f"descriptors not held by servers grew from {fds_first:g} to {fds_last:g}")
    p99s = [row["probe_p99_ms"] for row in samples if row["probe_p99_ms"] != ""]
    print(s.verdict())
    for line in s.details():
        print(line)
    print(f"    samples {len(samples)}; faults {len(fault_log)} ({', '.join(sorted({k for _, k in fault_log}))}); "
          f"RSS median {rss_first:.1f} → {rss_last:.1f} MiB; descriptors (less servers') {fds_first:g} → {fds_last:g}; "
          f"probe p99 median {statistics.median(p99s) if p99s else float('nan'):.2f} ms, max {max(p99s) if p99s else float('nan'):.2f} ms")
    print(f"    {options.csv}" + (f", {options.png}" if plotted else " (no matplotlib: no PNG)"))
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
