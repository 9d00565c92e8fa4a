"""The agent's sd_notify datagrams, read from a socket bound the way systemd binds NOTIFY_SOCKET.

Run by the Swift integration suite: python3 notify.py AGENT_BINARY CONFIG SOCKET_PATH. Starts the agent with
NOTIFY_SOCKET and WATCHDOG_USEC set, checks READY=1 with a STATUS line once it listens, WATCHDOG=1 pings,
RELOADING=1 (with MONOTONIC_USEC) then READY=1 around SIGHUP, and STOPPING=1 on SIGTERM. Exit status 0
means every check held; a failed check prints what differed and exits 1.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from driver_support import check

AGENT, CONFIG, PATH = sys.argv[1], sys.argv[2], sys.argv[3]


def until(receiver, wanted, seconds=10):
    """Datagrams until one holds `wanted`; returns them all."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            message = receiver.recv(4096).decode()
        except socket.timeout:
            continue
        seen.append(message)
        if wanted in message.split("\n"):
            return seen
    check(False, f"no {wanted} within {seconds} s; got {seen}")


if os.path.exists(PATH):
    os.unlink(PATH)
receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.bind(PATH)
receiver.settimeout(1)
environment = dict(os.environ, NOTIFY_SOCKET=PATH, WATCHDOG_USEC="400000")
agent = subprocess.Popen([AGENT, "--config", CONFIG], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    ready = until(receiver, "READY=1")
    check(len(ready) == 1, f"READY=1 is the first message: {ready}")
    check(any(line.startswith("STATUS=serving 1 pool on 127.0.0.1:") for line in ready[0].split("\n")), f"status: {ready[0]}")
    pings = until(receiver, "WATCHDOG=1", seconds=2)
    check(pings[-1] == "WATCHDOG=1", f"watchdog: {pings}")
    agent.send_signal(signal.SIGHUP)
    reloading = until(receiver, "RELOADING=1")
    fields = reloading[-1].split("\n")
    check(any(f.startswith("MONOTONIC_USEC=") and f[15:].isdigit() for f in fields), f"MONOTONIC_USEC: {fields}")
    until(receiver, "READY=1")
    agent.send_signal(signal.SIGTERM)
    stopping = until(receiver, "STOPPING=1")
    check("STATUS=stopping (graceful)" in stopping[-1].split("\n"), f"stopping: {stopping[-1]}")
    check(agent.wait(timeout=15) == 0, f"exit status {agent.returncode}")
finally:
    if agent.poll() is None:
        agent.kill()
    os.unlink(PATH)
print("notify: ok")
