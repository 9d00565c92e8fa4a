"""What the driver scripts share: a check that stops the script with what differed, and the agent's DSN."""
import sys


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", flush=True)
        sys.exit(1)


def dsn(port):
    return f"host=127.0.0.1 port={port} dbname=postgres user=postgres"
