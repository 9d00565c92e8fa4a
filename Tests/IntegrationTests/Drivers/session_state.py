"""Session state through a transaction-mode pool smaller than its clients, with psycopg 3 and asyncpg.

Run by the Swift integration suite: python3 session_state.py SCENARIO PORT, against a pool of size 2 with
max_pinned = 1 and pin_timeout = 2s. Exit status 0 means every check held.
"""
import asyncio
import sys
import time
from driver_support import check, dsn

PORT = int(sys.argv[2])
DSN = dsn(PORT)


async def connect():
    import asyncpg

    return await asyncpg.connect(host="127.0.0.1", port=PORT, user="postgres", database="postgres")


def listeners():
    """asyncpg's add_listener on several clients while busy clients keep both servers working; psycopg's
    notifies() generator on another."""
    import psycopg

    async def main():
        received = {n: [] for n in range(3)}
        listening = []
        for n in range(3):
            conn = await connect()
            await conn.add_listener("pa_events", lambda _c, _pid, channel, payload, n=n: received[n].append(payload))
            if n == 0:
                await conn.add_listener("pa_private", lambda _c, _pid, channel, payload: received[0].append("private:" + payload))
            listening.append(conn)
        stop = asyncio.Event()

        async def busy(n):
            conn = await connect()
            count = 0
            while not stop.is_set():
                async with conn.transaction():
                    check(await conn.fetchval("SELECT $1::int + 1", count) == count + 1, "busy client answer")
                    await conn.execute("SELECT pg_sleep(0.001)")
                count += 1
            await conn.close()
            return count

        workers = [asyncio.create_task(busy(n)) for n in range(4)]
        notifier = await connect()
        for i in range(20):
            await notifier.execute(f"NOTIFY pa_events, 'e{i}'")
        await notifier.execute("SELECT pg_notify('pa_private', 'p')")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(len(received[n]) >= 20 for n in range(3)):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        stop.set()
        counts = await asyncio.gather(*workers)
        check(all(c > 0 for c in counts), f"busy clients ran {counts}")
        expected = [f"e{i}" for i in range(20)]
        check([p for p in received[0] if not p.startswith("private:")] == expected, f"listener 0 got {received[0]}")
        check("private:p" in received[0], "listener 0 missed its own channel")
        for n in (1, 2):
            check(received[n] == expected, f"listener {n} got {received[n]}")
        for conn in listening + [notifier]:
            await conn.close()

    asyncio.run(main())

    with psycopg.connect(DSN, autocommit=True) as listener, psycopg.connect(DSN, autocommit=True) as sender:
        listener.execute("LISTEN pa_psycopg")
        for i in range(5):
            sender.execute("SELECT pg_notify('pa_psycopg', %s)", (f"n{i}",))
        payloads = []
        for notify in listener.notifies(timeout=10, stop_after=5):
            payloads.append(notify.payload)
        check(payloads == [f"n{i}" for i in range(5)], f"psycopg got {payloads}")
    # The listener connection lost: it comes back with its channels, and its clients hear about the gap.
    with psycopg.connect(DSN, autocommit=True) as listener, psycopg.connect(DSN, autocommit=True) as other:
        notices = []
        listener.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary))
        listener.execute("LISTEN pa_reconnect")
        pid = other.execute("SELECT pid FROM pg_stat_activity WHERE usename = current_user AND query LIKE 'LISTEN \"%'").fetchone()
        check(pid is not None, "no listener connection in pg_stat_activity")
        other.execute("SELECT pg_terminate_backend(%s)", pid)
        got = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            other.execute("NOTIFY pa_reconnect, 'again'")
            got = [n.payload for n in listener.notifies(timeout=0.3, stop_after=1)]
        check(got == ["again"], f"no notification after the listener came back: {got}")
        listener.execute("SELECT 1")
        check(any("is back after" in notice for notice in notices), f"notices: {notices}")
    print("listeners ok", flush=True)


def state():
    """Settings, advisory locks, temporary tables and WITH HOLD cursors stay with their client; pin limits
    and pin_timeout give their errors."""
    import psycopg

    async def settings():
        clients = [await connect() for _ in range(6)]
        for n, conn in enumerate(clients):
            await conn.execute(f"SET work_mem = '{n + 10}MB'")
        for _ in range(10):
            for n, conn in enumerate(clients):
                check(await conn.fetchval("SHOW work_mem") == f"{n + 10}MB", f"client {n} lost its work_mem")
                check(await conn.fetchval("SELECT current_setting($1)", "work_mem") == f"{n + 10}MB", "prepared SHOW")
        fresh = await connect()
        check(await fresh.fetchval("SHOW work_mem") == "4MB", "a new client inherited a work_mem")
        for conn in clients + [fresh]:
            await conn.close()

    asyncio.run(settings())

    async def locks():
        holder = await connect()
        await holder.execute("SELECT pg_advisory_lock(77)")
        pids = {await holder.fetchval("SELECT pg_backend_pid()") for _ in range(10)}
        check(len(pids) == 1, f"the lock holder moved between backends {pids}")
        # max_pinned = 1: a second session lock is refused (simple protocol: an error, the client stays).
        other = await connect()
        try:
            await other.execute("SELECT pg_advisory_lock(78)")
            check(False, "a pin past max_pinned was allowed")
        except Exception as error:  # noqa: BLE001 - the SQLSTATE is what matters
            check(getattr(error, "sqlstate", None) == "53300", f"refused pin: {error!r}")
        check(await other.fetchval("SELECT 41 + 1") == 42, "the refused client still works")
        # Others keep running on the pool's other server meanwhile.
        check(await other.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 77") == 1, "lock")
        check(await holder.fetchval("SELECT pg_advisory_unlock(77)") is True, "unlock")
        await other.execute("SELECT pg_advisory_lock(78)")
        await other.execute("SELECT pg_advisory_unlock(78)")
        await holder.close()
        await other.close()

    asyncio.run(locks())

    with psycopg.connect(DSN, autocommit=True) as conn, psycopg.connect(DSN, autocommit=True) as other:
        conn.execute("CREATE TEMP TABLE pa_py_scratch AS SELECT g FROM generate_series(1, 5) g")
        check(other.execute("SELECT 1").fetchone() == (1,), "other client")
        check(conn.execute("SELECT sum(g) FROM pa_py_scratch").fetchone() == (15,), "temp table across statements")
        conn.execute("DECLARE pa_py_c CURSOR WITH HOLD FOR SELECT g FROM pa_py_scratch ORDER BY g")
        check(conn.execute("FETCH 2 FROM pa_py_c").fetchall() == [(1,), (2,)], "hold cursor")
        check(other.execute("SELECT 2").fetchone() == (2,), "other client")
        check(conn.execute("FETCH 1 FROM pa_py_c").fetchone() == (3,), "hold cursor across statements")
        # The extended protocol cannot turn a refused Parse into an error in place: the client is closed.
        try:
            other.execute("SELECT pg_advisory_lock(5)")
            check(False, "psycopg pinned past max_pinned")
        except psycopg.OperationalError as error:
            check("max_pinned" in str(error), f"extended-protocol refusal: {error}")
        conn.execute("CLOSE pa_py_c")
        conn.execute("DROP TABLE pa_py_scratch")

    # pin_timeout = 2s: an idle pinned client is disconnected with 57P05.
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(9)")
        time.sleep(4)
        try:
            conn.execute("SELECT 1")
            check(False, "the pinned idle client outlived pin_timeout")
        except psycopg.OperationalError as error:
            check("pin_timeout" in str(error), f"pin_timeout: {error}")
    print("state ok", flush=True)


{"listeners": listeners, "state": state}[sys.argv[1]]()
