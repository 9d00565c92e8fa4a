"""What the fault matrix runs against: the PostgreSQL cluster (restartable, movable into a network namespace),
the agent process, a network namespace with netem, and the measurements of the agent's resources."""
import asyncio
import os
import re
import shlex
import signal
import subprocess
import time

import asyncpg

import wire

AGENT_USER = "pa_faults"


def as_pg_user(argv):
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + argv


async def run(argv, check=True, timeout=120):
    """Runs a command; returns (status, combined output)."""
    process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{shlex.join(argv)} did not finish within {timeout} s")
    text = output.decode(errors="replace")
    if check and process.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {process.returncode}: {text.strip()[-800:]}")
    return process.returncode, text


class Postgres:
    def __init__(self, pgdir, port, bindir):
        self.pgdir = pgdir
        self.port = port
        self.bindir = bindir
        self.socket_dir = os.path.join(pgdir, "run")
        self.netns = None
        # Restarted in the root namespace with no TCP listener: the agent and the harness use the Unix socket,
        # and a port in the kernel's range for outgoing connections may be some client's local port just then.
        self.listen = ""

    def pg_ctl(self, *args):
        return as_pg_user([os.path.join(self.bindir, "pg_ctl"), "-D", os.path.join(self.pgdir, "data"), *args])

    async def connect(self, timeout=10):
        return await asyncpg.connect(host=self.socket_dir, port=self.port, user="postgres", database="postgres",
                                     timeout=timeout)

    async def sql(self, query, *args, timeout=20):
        """Runs one statement on a fresh admin connection (over the Unix socket); returns the rows."""
        conn = await self.connect()
        try:
            return await conn.fetch(query, *args, timeout=timeout)
        finally:
            await conn.close()

    async def running(self):
        status, _ = await run(self.pg_ctl("status"), check=False)
        return status == 0

    async def stop(self, mode="fast"):
        await run(self.pg_ctl("-m", mode, "-w", "-t", "60", "stop"), check=False)

    async def start(self, netns=None, listen=""):
        """Starts the cluster on its port, in `netns` when given, listening on `listen`."""
        options = f"-p {self.port} -c listen_addresses='{listen}'"
        argv = self.pg_ctl("-l", os.path.join(self.pgdir, "postgres.log"), "-o", options, "-w", "-t", "60", "start")
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        last = ""
        for _ in range(10):
            status, last = await run(argv, check=False)
            if status == 0:
                self.netns = netns
                self.listen = listen
                return
            # The port can be taken for a moment by an outgoing connection's local end: try again.
            await asyncio.sleep(1)
        raise RuntimeError(f"PostgreSQL did not start: {last.strip()[-500:]}")

    async def restart_immediate(self, outage=0.0):
        """`pg_ctl -m immediate stop`, `outage` seconds down, and a start in the same place; returns the
        seconds it was away."""
        started = time.monotonic()
        await run(self.pg_ctl("-m", "immediate", "-w", "-t", "60", "stop"))
        await asyncio.sleep(outage)
        await self.start(self.netns, self.listen)
        await self.wait_ready()
        return time.monotonic() - started

    async def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.sql("SELECT 1")
                return
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError, asyncpg.InterfaceError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def allow_network(self, cidr):
        """Lets the agent's role in over TCP from `cidr` (trust, like the rest of this throwaway cluster)."""
        path = os.path.join(self.pgdir, "data", "pg_hba.conf")
        line = f"host all {AGENT_USER} {cidr} trust\n"
        with open(path) as f:
            if line in f.read():
                return
        with open(path, "a") as f:
            f.write(line)

    async def ensure_home(self):
        """The cluster running in the root namespace (where every scenario but F3 wants it)."""
        if self.netns is not None or not await self.running():
            if await self.running():
                await self.stop("fast")
            await self.start(None, "")
        await self.wait_ready()

    async def prepare(self):
        """The agent's role (commits synchronous: acknowledged means durable across an immediate restart) and
        the ledger."""
        await self.sql(f"DO $$ BEGIN CREATE ROLE {AGENT_USER} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        await self.sql(f"ALTER ROLE {AGENT_USER} SET synchronous_commit = on")
        await self.sql("DROP TABLE IF EXISTS ledger")
        await self.sql("CREATE TABLE ledger (id text NOT NULL, client int NOT NULL, marker text NOT NULL, kind text NOT NULL)")
        # Not unique (a duplicate must be counted, not refused); an index so reads by id stay as fast after an
        # hour's writes as at the start, and latency measures the agent, not a growing table scan.
        await self.sql("CREATE INDEX ledger_id ON ledger (id)")
        await self.sql(f"GRANT ALL ON ledger TO {AGENT_USER}")

    async def agent_backends(self):
        """(pid, state, query, backend_start age in s) of every backend the agent's role holds."""
        rows = await self.sql(
            "SELECT pid, coalesce(state, ''), coalesce(query, ''), extract(epoch FROM now() - backend_start)::float8 AS age, "
            "coalesce(wait_event, '') AS wait_event FROM pg_stat_activity "
            "WHERE usename = $1 AND backend_type = 'client backend'", AGENT_USER)
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


class Agent:
    """One poolagent process with its config file, log and control connection."""

    def __init__(self, binary, workdir, name, port, config_text):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.port = port
        self.control_path = os.path.join(workdir, "run", f"{name}.sock")
        self.config_path = os.path.join(workdir, f"{name}.toml")
        self.log_path = os.path.join(workdir, "logs", f"{name}.log")
        self.pid_path = os.path.join(workdir, "agent.pid")
        self.config_text = config_text.replace("@CONTROL@", self.control_path).replace("@PORT@", str(port))
        self.process = None
        self.control = None
        os.makedirs(os.path.join(workdir, "run"), exist_ok=True)
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write(self.config_text)

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def alive(self):
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout=20):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.close()
            raise RuntimeError(f"something already listens on port {self.port}; it is not the agent this run starts")
        except OSError:
            pass
        log = open(self.log_path, "ab")
        log.write(f"==== start {time.strftime('%H:%M:%S')}\n".encode())
        log.flush()
        self.process = await asyncio.create_subprocess_exec(self.binary, "--config", self.config_path,
                                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        with open(self.pid_path, "w") as f:
            f.write(f"{self.process.pid}\n")
        deadline = time.monotonic() + timeout
        self.control = wire.Control(self.control_path)
        while True:
            if not self.alive():
                raise RuntimeError(f"poolagent exited with {self.process.returncode}: {self.log_tail()}")
            try:
                # Both the listener and the control socket answer (a control socket file left by a killed agent
                # exists before the new agent replaces it).
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await self.control.call("version", timeout=5)
                break
            except (OSError, ConnectionError, asyncio.TimeoutError):
                self.control.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"poolagent is not listening after {timeout} s: {self.log_tail()}")
            await asyncio.sleep(0.05)

    async def call(self, method, **params):
        return await self.control.call(method, **params)

    async def signal_and_wait(self, number, timeout):
        """Sends `number`; returns (seconds until exit or None, exit status)."""
        started = time.monotonic()
        self.process.send_signal(number)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            return None, None
        finally:
            if self.control:
                self.control.close()
        return time.monotonic() - started, self.process.returncode

    async def stop(self):
        if self.alive():
            elapsed, _ = await self.signal_and_wait(signal.SIGINT, 15)
            if elapsed is None:
                self.process.kill()
                await self.process.wait()
        if self.control:
            self.control.close()
        try:
            os.unlink(self.pid_path)
        except OSError:
            pass

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return -1

    def fd_kinds(self):
        kinds = {}
        try:
            names = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:
            return kinds
        for fd in names:
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            kind = target.split(":")[0] if ":" in target else "file"
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def rss_mib(self):
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return -1.0

    def close_wait(self):
        """The agent's TCP sockets in CLOSE-WAIT (the peer closed, the agent did not)."""
        try:
            out = subprocess.run(["ss", "-H", "-tanp", "state", "close-wait"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [line.strip() for line in out.splitlines() if re.search(rf"pid={self.pid},", line)]


def unix_sockets_without_peer(pid):
    """The process's connected Unix stream sockets whose peer is gone (peer inode 0): the Unix-socket
    counterpart of CLOSE-WAIT, e.g. a server connection whose backend exited and that nobody closed."""
    try:
        out = subprocess.run(["ss", "-H", "-xp", "state", "established"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    dead = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        fields = line.split()
        # u_str  Recv-Q Send-Q  local  inode  peer  peer-inode  users:(...)
        if len(fields) >= 7 and fields[0] == "u_str" and fields[6] == "0":
            dead.append(" ".join(fields[:7] + [re.sub(r".*(fd=\d+).*", r"\1", fields[7] if len(fields) > 7 else "")]))
    return dead


class Netns:
    """A network namespace joined to the root one by a veth pair, with an impairment on both ends: netem
    (delay, loss) where the kernel has it, else tbf (a slow link with a short queue: queueing delay and tail
    drops). A blackout is 100% loss (netem) or a link too slow for any packet (tbf); `link(False)` takes the
    veth down."""

    def __init__(self, name="pafaults", host_if="pafh0", ns_if="pafn0", host_ip="10.213.47.1", ns_ip="10.213.47.2"):
        self.name = name
        self.host_if = host_if
        self.ns_if = ns_if
        self.host_ip = host_ip
        self.ns_ip = ns_ip
        self.kind = None

    async def create(self):
        """Returns None when the namespace is up, else the reason it cannot be."""
        await self.delete()
        status, out = await run(["ip", "netns", "add", self.name], check=False)
        if status != 0:
            return f"network namespaces are not available here (ip netns add: {out.strip()})"
        steps = [
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if],
            ["ip", "link", "set", self.ns_if, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            ["ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if],
            ["ip", "-n", self.name, "link", "set", self.ns_if, "up"],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ]
        for step in steps:
            status, out = await run(step, check=False)
            if status != 0:
                await self.delete()
                return f"network namespaces are not available here ({shlex.join(step)}: {out.strip()})"
        status, netem_out = await run(["tc", "qdisc", "replace", "dev", self.host_if, "root", "netem", "delay", "0ms"], check=False)
        if status == 0:
            self.kind = "netem"
        else:
            status, out = await run(["tc", "qdisc", "replace", "dev", self.host_if, "root", "tbf", "rate", "10gbit",
                                     "burst", "1mb", "latency", "10ms"], check=False)
            if status != 0:
                await self.delete()
                return f"neither tc netem nor tbf is available here ({netem_out.strip()}; {out.strip()})"
            self.kind = "tbf"
        await self.clear()
        return None

    def describe(self):
        if self.kind == "netem":
            return "netem on both veth ends: delay 25ms±5ms and 2.5% loss each way"
        return ("this kernel has no netem; tbf on both veth ends: 2 Mbit/s with a 50 ms queue each way "
                "(queueing delay and tail drops under the load)")

    async def qdisc(self, *spec):
        await run(["tc", "qdisc", "replace", "dev", self.host_if, "root", *spec])
        await run(["ip", "netns", "exec", self.name, "tc", "qdisc", "replace", "dev", self.ns_if, "root", *spec])

    async def impair(self):
        if self.kind == "netem":
            await self.qdisc("netem", "delay", "25ms", "5ms", "loss", "2.5%")
        else:
            await self.qdisc("tbf", "rate", "2mbit", "burst", "8kb", "latency", "50ms")

    async def blackout(self):
        if self.kind == "netem":
            await self.qdisc("netem", "loss", "100%")
        else:
            await self.qdisc("tbf", "rate", "8bit", "burst", "64", "limit", "64")

    async def clear(self):
        if self.kind == "netem":
            await self.qdisc("netem", "delay", "0ms")
        else:
            await self.qdisc("tbf", "rate", "10gbit", "burst", "1mb", "latency", "10ms")

    async def dropped(self):
        """Packets the qdiscs of both ends dropped so far."""
        total = 0
        for argv in (["tc", "-s", "qdisc", "show", "dev", self.host_if],
                     ["ip", "netns", "exec", self.name, "tc", "-s", "qdisc", "show", "dev", self.ns_if]):
            _, out = await run(argv, check=False)
            total += sum(int(n) for n in re.findall(r"dropped (\d+)", out))
        return total

    async def link(self, up):
        await run(["ip", "link", "set", self.host_if, "up" if up else "down"])

    async def delete(self):
        await run(["ip", "link", "del", self.host_if], check=False)
        status, out = await run(["ip", "netns", "list"], check=False)
        if status == 0 and re.search(rf"^{re.escape(self.name)}\b", out, re.M):
            await run(["ip", "netns", "del", self.name], check=False)
