"""The mixed client load that runs under every fault, and the ledger that says what each write's fate must be.

Every write carries a unique id into `ledger` (no primary key, so duplicates show). The client that made it
records it as
  acked    it saw the commit (ReadyForQuery after COMMIT / the autocommit statement / the COPY),
  failed   the write cannot have committed: PostgreSQL answered with an error (rolled back), the agent said the
           request never reached a server, or the connection went away before COMMIT (or CopyDone) was sent,
  unknown  the connection died after the commit was requested and before its answer.
Every read carries the client's marker, and whatever a client reads back must be its own.
"""
import asyncio
import random
import time

import asyncpg

import wire

OP_TIMEOUT = 75.0  # beyond wait_timeout (30 s) plus a shutdown; an answer later than this is a hang


class Ledger:
    def __init__(self, scenario):
        self.scenario = scenario
        self.outcome = {}          # id -> "acked" | "failed" | "unknown" | "pending"
        self.unknown_ops = 0
        self.acked = 0
        self.ack_times = []        # monotonic time of every acked operation, for the progress check
        self.errors = {}           # sqlstate or kind -> count
        self.error_examples = {}
        self.violations = []       # cross-client bytes: (client, what)
        self.anomalies = []        # protocol anomalies: (client, what)
        self.hangs = 0
        self.cancelled_in_load = 0
        self.connects = 0
        self.connect_failures = 0
        self.ops = 0
        self.next_seq = {}

    def new_id(self, client):
        seq = self.next_seq.get(client, 0) + 1
        self.next_seq[client] = seq
        ident = f"{self.scenario}:{client}:{seq}"
        self.outcome[ident] = "pending"
        return ident

    def acked_ids(self, ids):
        for ident in ids:
            self.outcome[ident] = "acked"
        self.acked += 1
        self.ack_times.append(time.monotonic())

    def failed_ids(self, ids):
        for ident in ids:
            self.outcome[ident] = "failed"

    def unknown_ids(self, ids):
        if ids:
            for ident in ids:
                self.outcome[ident] = "unknown"
            self.unknown_ops += 1

    def settle(self, ids, commit_requested, error):
        """What `ids` became when `error` ended the operation."""
        if not ids:
            return
        if not commit_requested or wire.never_ran(error):
            self.failed_ids(ids)
        else:
            self.unknown_ids(ids)

    def note_error(self, error, client):
        if isinstance(error, wire.ServerError):
            key = error.sqlstate or "?"
            if error.sqlstate == "57014":
                self.cancelled_in_load += 1
        elif isinstance(error, asyncpg.PostgresError):
            key = getattr(error, "sqlstate", None) or "?"
            if key == "57014":
                self.cancelled_in_load += 1
        elif isinstance(error, wire.Anomaly):
            key = "anomaly"
            self.anomalies.append((client, str(error)))
        elif isinstance(error, asyncio.TimeoutError):
            key = "hang"
            self.hangs += 1
        else:
            key = "lost"
        self.errors[key] = self.errors.get(key, 0) + 1
        self.error_examples.setdefault(key, f"client {client}: {type(error).__name__}: {error}"[:300])

    def violation(self, client, what):
        self.violations.append((client, what))

    def counts(self):
        totals = {"acked": 0, "failed": 0, "unknown": 0, "pending": 0}
        for outcome in self.outcome.values():
            totals[outcome] += 1
        return totals

    def longest_gap(self, start, end):
        """The longest stretch between `start` and `end` without an acked operation."""
        times = [t for t in self.ack_times if start <= t <= end]
        points = [start] + times + [end]
        return max(b - a for a, b in zip(points, points[1:]))


# The agent's answers that it sends only before a server got the request; asyncpg reports them inside a
# ConnectionDoesNotExistError ("connection was closed in the middle of operation: ...").
AGENT_NEVER_RAN = ("cannot connect to the upstream of pool", "no server connection available in pool")


def never_ran_asyncpg(error):
    """asyncpg's view of `wire.never_ran`: True when the error proves nothing committed."""
    if isinstance(error, asyncpg.ConnectionDoesNotExistError):
        return any(text in str(error) for text in AGENT_NEVER_RAN)
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", "") or ""
        severity = getattr(error, "severity_en", None) or getattr(error, "severity", "") or ""
        message = str(getattr(error, "message", "") or error)
        converted = wire.ServerError({"C": sqlstate, "V": severity, "M": message})
        return wire.never_ran(converted)
    return False


class Load:
    """`clients` concurrent clients against the agent until `stop()`: raw-protocol clients and asyncpg ones."""

    def __init__(self, ledger, host, port, database, clients, seed, asyncpg_share=0.25, user="app"):
        self.ledger = ledger
        self.host = host
        self.port = port
        self.database = database
        self.clients = clients
        self.rng = random.Random(seed)
        self.asyncpg_share = asyncpg_share
        self.user = user
        self.stopping = False
        self.tasks = []

    def start(self):
        for index in range(self.clients):
            if index < int(self.clients * self.asyncpg_share):
                client = AsyncpgClient(self, index, random.Random(self.rng.random()))
            else:
                client = RawClient(self, index, random.Random(self.rng.random()))
            self.tasks.append(asyncio.create_task(client.run()))

    async def stop(self, timeout=90.0):
        self.stopping = True
        done, pending = await asyncio.wait(self.tasks, timeout=timeout) if self.tasks else (set(), set())
        for task in pending:
            self.ledger.hangs += 1
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        for task in done:
            if task.exception() is not None:
                self.ledger.anomalies.append(("task", f"client task crashed: {task.exception()!r}"))


def row_sql(ident, client, marker, kind):
    return f"('{ident}', {client}, '{marker}', '{kind}')"


class Client:
    """What every load client has: its ledger, its random source and the marker its reads must carry."""

    def __init__(self, load, index, rng):
        self.load = load
        self.ledger = load.ledger
        self.index = index
        self.rng = rng
        self.marker = f"m{index}x{rng.randrange(1 << 30):x}"
        self.conn = None


class RawClient(Client):
    """Raw protocol v3: explicit transactions with reads and sleeps, autocommit inserts, pipelines of Syncs,
    pipelined transactions, COPY FROM STDIN, marker reads."""

    async def run(self):
        while not self.load.stopping:
            if self.conn is None:
                try:
                    self.conn = await wire.Conn.open(self.load.host, self.load.port, self.load.user, self.load.database)
                    self.ledger.connects += 1
                except (wire.Lost, wire.ServerError, wire.Anomaly) as error:
                    self.ledger.connect_failures += 1
                    self.ledger.note_error(error, self.index)
                    await asyncio.sleep(self.rng.uniform(0.05, 0.4))
                    continue
            op = self.rng.choices(
                [self.transaction, self.autocommit, self.pipeline, self.pipelined_transaction, self.copy, self.select],
                weights=[30, 20, 15, 10, 10, 15])[0]
            self.pending = []
            self.commit_requested = False
            self.ledger.ops += 1
            try:
                await asyncio.wait_for(op(), OP_TIMEOUT)
            except (wire.Lost, wire.ServerError, wire.Anomaly, asyncio.TimeoutError) as error:
                self.ledger.note_error(error, self.index)
                self.ledger.settle(self.pending, self.commit_requested, error)
                self.drop()
                await asyncio.sleep(self.rng.uniform(0.01, 0.2))
            self.pending = []
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    def drop(self):
        if self.conn is not None:
            self.conn.abort()
            self.conn = None

    def check_marker(self, value, what):
        if value != self.marker:
            self.ledger.violation(self.index, f"{what}: read {value!r}, own marker {self.marker!r}")

    async def finish_error(self, result):
        """An ERROR answered inside our request: the pending writes are rolled back."""
        self.ledger.note_error(result.error, self.index)
        self.ledger.failed_ids(self.pending)
        self.pending = []
        if self.conn.status == b"E" or self.conn.status == b"T":
            rollback = await self.conn.simple("ROLLBACK")
            if rollback.error is not None:
                raise rollback.error

    async def transaction(self):
        conn = self.conn
        begin = await conn.simple("BEGIN")
        if begin.error is not None:
            return await self.finish_error(begin)
        for _ in range(self.rng.choice((1, 1, 2))):
            ident = self.ledger.new_id(self.index)
            self.pending.append(ident)
            result = await conn.simple(
                f"INSERT INTO ledger (id, client, marker, kind) VALUES {row_sql(ident, self.index, self.marker, 'tx')} RETURNING marker")
            if result.error is not None:
                return await self.finish_error(result)
            if len(result.rows) != 1:
                raise wire.Anomaly(f"INSERT RETURNING gave {len(result.rows)} rows")
            self.check_marker(result.rows[0][0], "INSERT RETURNING in a transaction")
            if self.rng.random() < 0.5:
                result = await conn.simple(f"SELECT marker, pg_sleep({self.rng.choice((0.005, 0.01, 0.02, 0.05))}) FROM ledger WHERE id = '{ident}'")
                if result.error is not None:
                    return await self.finish_error(result)
                if len(result.rows) != 1:
                    raise wire.Anomaly(f"own uncommitted row read back {len(result.rows)} times")
                self.check_marker(result.rows[0][0], "own row read back in a transaction")
        self.commit_requested = True
        result = await conn.simple("COMMIT")
        if result.error is not None:
            return await self.finish_error(result)
        if result.tags != ["COMMIT"] or result.status != b"I":
            if result.tags == ["ROLLBACK"]:
                self.ledger.failed_ids(self.pending)
                self.pending = []
                return
            raise wire.Anomaly(f"COMMIT answered {result.tags} status {result.status}")
        self.ledger.acked_ids(self.pending)
        self.pending = []

    async def autocommit(self):
        ident = self.ledger.new_id(self.index)
        self.pending.append(ident)
        self.commit_requested = True
        result = await self.conn.simple(
            f"INSERT INTO ledger (id, client, marker, kind) VALUES {row_sql(ident, self.index, self.marker, 'auto')} RETURNING marker")
        if result.error is not None:
            return await self.finish_error(result)
        if len(result.rows) != 1 or result.status != b"I":
            raise wire.Anomaly(f"autocommit INSERT gave {len(result.rows)} rows, status {result.status}")
        self.check_marker(result.rows[0][0], "autocommit INSERT RETURNING")
        self.ledger.acked_ids(self.pending)
        self.pending = []

    async def pipeline(self):
        """Several autocommit inserts, each with its own Sync, all sent before reading."""
        conn = self.conn
        idents = [self.ledger.new_id(self.index) for _ in range(self.rng.randint(2, 4))]
        data = b""
        for ident in idents:
            data += (wire.parse("", "INSERT INTO ledger (id, client, marker, kind) VALUES ($1, $2, $3, 'pipe') RETURNING marker")
                     + wire.bind("", "", (ident, str(self.index), self.marker)) + wire.execute() + wire.sync())
        self.pending = list(idents)
        self.commit_requested = True
        conn.send(data)
        for ident in idents:
            result = await conn.results(wire.Result())
            self.pending.remove(ident)
            if result.error is not None:
                self.ledger.note_error(result.error, self.index)
                self.ledger.failed_ids([ident])
                continue
            if len(result.rows) != 1 or result.status != b"I":
                self.pending.append(ident)
                raise wire.Anomaly(f"pipelined INSERT gave {len(result.rows)} rows, status {result.status}")
            self.check_marker(result.rows[0][0], "pipelined INSERT RETURNING")
            self.ledger.acked_ids([ident])

    async def pipelined_transaction(self):
        """BEGIN, inserts, a read of the client's marker and COMMIT, all in one flight ending in one Sync."""
        conn = self.conn
        idents = [self.ledger.new_id(self.index) for _ in range(self.rng.randint(1, 3))]
        data = wire.parse("", "BEGIN") + wire.bind("", "") + wire.execute()
        for ident in idents:
            data += (wire.parse("", "INSERT INTO ledger (id, client, marker, kind) VALUES ($1, $2, $3, 'ptx') RETURNING marker")
                     + wire.bind("", "", (ident, str(self.index), self.marker)) + wire.execute())
        data += wire.parse("", "SELECT $1::text") + wire.bind("", "", (self.marker,)) + wire.execute()
        data += wire.parse("", "COMMIT") + wire.bind("", "") + wire.execute() + wire.sync()
        self.pending = list(idents)
        self.commit_requested = True
        conn.send(data)
        result = await conn.results(wire.Result())
        if result.error is not None:
            return await self.finish_error(result)
        if result.tags[-1:] != ["COMMIT"] or len(result.rows) != len(idents) + 1 or result.status != b"I":
            raise wire.Anomaly(f"pipelined transaction answered {result.tags}, {len(result.rows)} rows, status {result.status}")
        for row in result.rows:
            self.check_marker(row[0], "pipelined transaction")
        self.ledger.acked_ids(self.pending)
        self.pending = []

    async def copy(self):
        conn = self.conn
        idents = [self.ledger.new_id(self.index) for _ in range(self.rng.randint(2, 5))]
        self.pending = list(idents)
        conn.send(wire.query("COPY ledger (id, client, marker, kind) FROM STDIN"))
        result = await conn.results(wire.Result(), expect_copy_in=True)
        if not result.copy_in:
            if result.error is not None:
                return await self.finish_error(result)
            raise wire.Anomaly(f"COPY FROM STDIN answered {result.tags} without CopyInResponse")
        for ident in idents:
            conn.send(wire.copy_data(f"{ident}\t{self.index}\t{self.marker}\tcopy\n"))
            if self.rng.random() < 0.3:
                await conn.drain()
                await asyncio.sleep(0.005)
        self.commit_requested = True
        conn.send(wire.copy_done())
        result = await conn.results(wire.Result())
        if result.error is not None:
            return await self.finish_error(result)
        if result.tags != [f"COPY {len(idents)}"] or result.status != b"I":
            raise wire.Anomaly(f"COPY answered {result.tags}, status {result.status}")
        self.ledger.acked_ids(self.pending)
        self.pending = []

    async def select(self):
        result = await self.conn.simple(f"SELECT '{self.marker}'::text, pg_sleep({self.rng.choice((0, 0.005, 0.02))})")
        if result.error is not None:
            return await self.finish_error(result)
        if len(result.rows) != 1:
            raise wire.Anomaly(f"marker SELECT gave {len(result.rows)} rows")
        self.check_marker(result.rows[0][0], "marker SELECT")


class AsyncpgClient(Client):
    """asyncpg (named prepared statements, executemany pipelines, binary COPY) with the same bookkeeping."""

    async def run(self):
        while not self.load.stopping:
            if self.conn is None:
                try:
                    self.conn = await asyncpg.connect(host=self.load.host, port=self.load.port, user=self.load.user,
                                                      database=self.load.database, timeout=15, ssl=False)
                    self.ledger.connects += 1
                except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    self.ledger.connect_failures += 1
                    self.ledger.note_error(error, self.index)
                    await asyncio.sleep(self.rng.uniform(0.05, 0.4))
                    continue
            op = self.rng.choices([self.transaction, self.executemany, self.copy, self.select], weights=[40, 25, 15, 20])[0]
            self.pending = []
            self.commit_requested = False
            self.ledger.ops += 1
            try:
                await asyncio.wait_for(op(), OP_TIMEOUT)
            except asyncpg.PostgresError as error:
                self.ledger.note_error(error, self.index)
                if not self.commit_requested or never_ran_asyncpg(error):
                    self.ledger.failed_ids(self.pending)
                else:
                    self.ledger.unknown_ids(self.pending)
                if self.conn is not None and (self.conn.is_closed() or self.conn.is_in_transaction()):
                    await self.reset()
            except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                    asyncio.IncompleteReadError) as error:
                self.ledger.note_error(error, self.index)
                self.ledger.settle(self.pending, self.commit_requested, error)
                self.drop()
                await asyncio.sleep(self.rng.uniform(0.01, 0.2))
            self.pending = []
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), 5)
            except Exception:  # noqa: BLE001
                self.conn.terminate()
            self.conn = None

    async def reset(self):
        try:
            if not self.conn.is_closed():
                await asyncio.wait_for(self.conn.execute("ROLLBACK"), 10)
                return
        except Exception:  # noqa: BLE001
            pass
        self.drop()

    def drop(self):
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    def check_marker(self, value, what):
        if value != self.marker:
            self.ledger.violation(self.index, f"{what}: read {value!r}, own marker {self.marker!r}")

    async def transaction(self):
        conn = self.conn
        transaction = conn.transaction()
        await transaction.start()
        try:
            for _ in range(self.rng.choice((1, 2))):
                ident = self.ledger.new_id(self.index)
                self.pending.append(ident)
                value = await conn.fetchval(
                    "INSERT INTO ledger (id, client, marker, kind) VALUES ($1, $2, $3, 'apg-tx') RETURNING marker",
                    ident, self.index, self.marker)
                self.check_marker(value, "asyncpg INSERT RETURNING")
                if self.rng.random() < 0.4:
                    value = await conn.fetchval("SELECT marker FROM ledger, pg_sleep($2) WHERE id = $1", ident,
                                                self.rng.choice((0.005, 0.02)))
                    self.check_marker(value, "asyncpg own row read back")
        except asyncpg.PostgresError:
            if not conn.is_closed():
                try:
                    await transaction.rollback()
                except Exception:  # noqa: BLE001
                    pass
            raise
        self.commit_requested = True
        await transaction.commit()
        self.ledger.acked_ids(self.pending)

    async def executemany(self):
        idents = [self.ledger.new_id(self.index) for _ in range(self.rng.randint(2, 5))]
        self.pending = list(idents)
        self.commit_requested = True
        await self.conn.executemany("INSERT INTO ledger (id, client, marker, kind) VALUES ($1, $2, $3, 'apg-many')",
                                    [(ident, self.index, self.marker) for ident in idents])
        self.ledger.acked_ids(self.pending)

    async def copy(self):
        idents = [self.ledger.new_id(self.index) for _ in range(self.rng.randint(2, 4))]
        self.pending = list(idents)
        self.commit_requested = True
        await self.conn.copy_records_to_table("ledger", columns=["id", "client", "marker", "kind"],
                                              records=[(ident, self.index, self.marker, "apg-copy") for ident in idents])
        self.ledger.acked_ids(self.pending)

    async def select(self):
        value = await self.conn.fetchval("SELECT $1::text", self.marker)
        self.check_marker(value, "asyncpg marker SELECT")
