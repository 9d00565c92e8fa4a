"""Real Python drivers through the agent: psycopg 3 and asyncpg in transaction mode, and their logins.

Run by the Swift integration suite: python3 drivers.py SCENARIO PORT. Exit status 0 means every check held;
a failed check prints what differed and exits 1.
"""
import asyncio
import sys
import threading
from driver_support import check, dsn

PORT = int(sys.argv[2])
DSN = dsn(PORT)


def psycopg_prepared():
    """Server-side prepared statements for every query (prepare_threshold=0), many clients, few servers.
    psycopg names its statements _pg3_0, _pg3_1, … per connection, so the same name means different
    queries on different clients: the agent must keep them apart."""
    import psycopg

    errors = []

    def worker(n):
        try:
            with psycopg.connect(DSN, prepare_threshold=0, autocommit=True) as conn:
                for i in range(60):
                    # Each client runs its own statement first, so _pg3_0 differs per client.
                    row = conn.execute(f"SELECT %s::int * {n + 2}, 'client {n}'", (i,)).fetchone()
                    if row != (i * (n + 2), f"client {n}"):
                        errors.append(f"client {n} got {row} for {i}")
                    row = conn.execute("SELECT %s::text || '!'", (f"x{i}",)).fetchone()
                    if row != (f"x{i}!",):
                        errors.append(f"client {n} got {row}")
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (n,))
                        total = conn.execute("SELECT sum(g) FROM generate_series(1, %s) g", (i + 1,)).fetchone()[0]
                        if total != (i + 1) * (i + 2) // 2:
                            errors.append(f"client {n} sum {total}")
                conn.execute("DEALLOCATE ALL")
                row = conn.execute("SELECT %s::int + 1", (41,)).fetchone()
                if row != (42,):
                    errors.append(f"client {n} after DEALLOCATE ALL got {row}")
        except Exception as error:  # noqa: BLE001 - any driver error is a failure to report
            errors.append(f"client {n}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    check(not errors, "; ".join(errors[:5]))

    # Settings stay with their client even though servers are shared.
    with psycopg.connect(DSN, autocommit=True) as a, psycopg.connect(DSN, autocommit=True) as b:
        a.execute("SET TimeZone = 'Asia/Tokyo'")
        for _ in range(20):
            check(a.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo", "client a lost its TimeZone")
            check(b.execute("SHOW TimeZone").fetchone()[0] != "Asia/Tokyo", "client b saw client a's TimeZone")
    print("psycopg ok", flush=True)


def asyncpg_cache():
    """asyncpg with its default statement cache: named statements reused across transactions."""
    import asyncpg

    async def worker(n):
        conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="postgres", database="postgres")
        try:
            for i in range(60):
                value = await conn.fetchval("SELECT $1::int * $2::int", i, n + 1)
                check(value == i * (n + 1), f"asyncpg client {n} got {value}")
                rows = await conn.fetch("SELECT g, g * 2 AS twice FROM generate_series(1, $1::int) g", 5)
                check([tuple(r) for r in rows] == [(g, g * 2) for g in range(1, 6)], f"asyncpg client {n} rows {rows}")
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", n)
                    check(await conn.fetchval("SELECT $1::text", f"t{i}") == f"t{i}", "text round trip")
            statement = await conn.prepare("SELECT $1::int + 100")
            for i in range(10):
                check(await statement.fetchval(i) == i + 100, "explicit prepared statement")
        finally:
            await conn.close()

    async def main():
        await asyncio.gather(*(worker(n) for n in range(12)))

    asyncio.run(main())
    print("asyncpg ok", flush=True)


def authentication():
    """Logins against the auth file of the Authentication suite: asyncpg's own SCRAM and md5 code, and libpq's
    through psycopg, in plaintext and over TLS; a wrong password is 28P01 as the driver reports it."""
    import ssl

    import asyncpg
    import psycopg

    no_verify = ssl.create_default_context()
    no_verify.check_hostname = False
    no_verify.verify_mode = ssl.CERT_NONE

    async def main():
        for user, password in (("alice", "alice-secret"), ("bob", "bob-secret"), ("carol", "carol-secret")):
            for tls in (False, no_verify):
                conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user=user, password=password,
                                             database="postgres", ssl=tls)
                check(await conn.fetchval("SELECT 1") == 1, f"asyncpg {user} tls={bool(tls)}")
                await conn.close()
        try:
            await asyncpg.connect(host="127.0.0.1", port=PORT, user="alice", password="wrong", database="postgres", ssl=False)
            check(False, "asyncpg logged in with a wrong password")
        except asyncpg.InvalidPasswordError as error:
            check(error.sqlstate == "28P01", f"wrong password: {error.sqlstate}")

    asyncio.run(main())
    for mode in ("disable", "require"):
        with psycopg.connect(f"host=127.0.0.1 port={PORT} dbname=postgres user=bob password=bob-secret sslmode={mode}") as conn:
            check(conn.execute("SELECT 1").fetchone()[0] == 1, f"psycopg sslmode={mode}")
    print("authentication ok", flush=True)


{"psycopg": psycopg_prepared, "asyncpg": asyncpg_cache, "authentication": authentication}[sys.argv[1]]()
