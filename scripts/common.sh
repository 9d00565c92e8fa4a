# Shared helpers for the project's scripts: packages, a throwaway PostgreSQL cluster, builds.
# Sourced, not run.

POOLAGENT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POOLAGENT_PACKAGES=(libpq-dev libssl-dev libjansson-dev pkg-config postgresql postgresql-contrib pgbouncer openssl ca-certificates)

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs what is missing with apt-get; does nothing when everything is there.
ensure_packages() {
    local missing=()
    for package in "${POOLAGENT_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v swift >/dev/null || die "swift is not on PATH (expected Swift 6 at /opt/swift)"
}

# The newest installed PostgreSQL server binaries.
pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    printf '%s\n' "$dir"
}

# Runs a command as the cluster's OS user: postgres when we are root (initdb refuses root).
as_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A directory the cluster's OS user can reach: $1 when it can, else a new one under /tmp.
pg_reachable_dir() {
    local wanted=$1
    mkdir -p "$wanted"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$wanted"
        if ! runuser -u postgres -- test -w "$wanted"; then
            wanted=$(mktemp -d /tmp/poolagent-pg.XXXXXX)
            chown postgres:postgres "$wanted"
        fi
    fi
    printf '%s\n' "$wanted"
}

# port_in_use PORT: true when a socket on this machine uses TCP port PORT (listening, or the local end of a
# connection: the test and bench ports lie in the kernel's range for outgoing connections).
port_in_use() {
    if command -v ss >/dev/null; then
        [ -n "$(ss -Htan "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# free_port PORT: PORT when nothing uses it, else the next free one above it.
free_port() {
    local port=$1 last=$(( $1 + 200 ))
    while port_in_use "$port"; do
        port=$(( port + 1 ))
        [ "$port" -le "$last" ] || die "no free TCP port between $1 and $last"
    done
    printf '%s\n' "$port"
}

# start_cluster DIR PORT: initialises (once) and starts a trust-auth cluster with its socket in DIR/run, and prints
# the port it listens on. A cluster already running keeps its port; otherwise PORT is used when it is free, else the
# next free port above it (another PostgreSQL on the machine must not stop a run).
start_cluster() {
    local dir=$1 port=$2 bindir
    bindir=$(pg_bindir)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg_user mkdir -p "$dir/data" "$dir/run"
        as_pg_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/run'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
CONF
    fi
    as_pg_user mkdir -p "$dir/run"
    if as_pg_user "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        sed -n 4p "$dir/data/postmaster.pid"
        return 0
    fi
    # A port can be taken between the check and PostgreSQL's bind (by an outgoing connection, say): then the
    # next one is tried.
    local wanted=$port logged
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$(free_port "$port")
        logged=$(as_pg_user sh -c "cat '$dir/postgres.log' 2>/dev/null | wc -l")
        if as_pg_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 start >/dev/null; then
            [ "$port" = "$wanted" ] || say "port $wanted is taken; the cluster in $dir listens on $port"
            printf '%s\n' "$port"
            return 0
        fi
        as_pg_user tail -n "+$((logged + 1))" "$dir/postgres.log" | grep -q "could not create any TCP/IP sockets" || break
        port=$(( port + 1 ))
    done
    as_pg_user tail -n 20 "$dir/postgres.log" >&2
    die "PostgreSQL did not start"
}

# make_test_certificates DIR: a throwaway CA and, signed by it, a server certificate for 127.0.0.1 and localhost
# (subjectAltName), a client certificate for the role "certuser", a second CA that signed nothing, and a server
# certificate whose names are not this machine's. Made once; the server's files belong to the cluster's OS user.
make_test_certificates() {
    local dir=$1
    [ -f "$dir/ca.crt" ] && return 0
    mkdir -p "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=poolagent test CA" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=another CA" -keyout other-ca.key -out other-ca.crt 2>/dev/null
        printf 'subjectAltName = IP:127.0.0.1, DNS:localhost\n' >server.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile server.ext -out server.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=certuser" -keyout client.key -out client.csr 2>/dev/null
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out client.crt 2>/dev/null
        chmod 600 ./*.key
    ) || die "openssl could not make the test certificates in $dir"
}

# enable_cluster_tls DIR PORT: turns on TLS in the running cluster of start_cluster DIR, with the certificates of
# make_test_certificates (made in DIR/certs): ssl = on, the server certificate and key, the CA for client
# certificates. pg_hba.conf is left as it is.
enable_cluster_tls() {
    local dir=$1 port=$2 owner
    make_test_certificates "$dir/certs"
    owner=$(as_pg_user id -u)
    as_pg_user mkdir -p "$dir/server-tls"
    install -o "$owner" -m 600 "$dir/certs/server.key" "$dir/server-tls/server.key"
    install -o "$owner" -m 644 "$dir/certs/server.crt" "$dir/server-tls/server.crt"
    install -o "$owner" -m 644 "$dir/certs/ca.crt" "$dir/server-tls/ca.crt"
    as_pg_user "$(pg_bindir)/psql" -h "$dir/run" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER SYSTEM SET ssl_cert_file = '$dir/server-tls/server.crt';
ALTER SYSTEM SET ssl_key_file = '$dir/server-tls/server.key';
ALTER SYSTEM SET ssl_ca_file = '$dir/server-tls/ca.crt';
ALTER SYSTEM SET ssl = on;
SELECT pg_reload_conf();
SQL
}

# start_tls_cluster DIR PORT: like start_cluster, but TCP connections must be TLS (enable_cluster_tls, and
# pg_hba.conf with only hostssl lines for TCP: certificate auth for "certuser", SCRAM for everyone else), with
# the roles "tlsuser" (password tls-secret) and "certuser". Prints the port.
start_tls_cluster() {
    local dir=$1 port
    port=$(start_cluster "$dir" "$2")
    enable_cluster_tls "$dir" "$port"
    as_pg_user sh -c "cat >'$dir/data/pg_hba.conf'" <<HBA
local all all trust
hostssl all certuser 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 scram-sha-256
HBA
    as_pg_user "$(pg_bindir)/psql" -h "$dir/run" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
SELECT pg_reload_conf();
DO \$\$BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tlsuser') THEN CREATE ROLE tlsuser LOGIN PASSWORD 'tls-secret'; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certuser') THEN CREATE ROLE certuser LOGIN; END IF;
END\$\$;
GRANT pg_read_all_stats TO tlsuser, certuser;
SQL
    printf '%s\n' "$port"
}

stop_cluster() {
    local dir=$1
    [ -f "$dir/data/PG_VERSION" ] || return 0
    as_pg_user "$(pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# A virtualenv in .data/venv with the Python drivers and the JSON Schema validator the tests use; prints its python.
ensure_python_drivers() {
    local venv="$POOLAGENT_ROOT/.data/venv"
    if ! "$venv/bin/python" -c "import psycopg, asyncpg, jsonschema" 2>/dev/null; then
        python3 -m venv "$venv" 2>/dev/null || { ensure_packages python3-venv; python3 -m venv "$venv"; }
        "$venv/bin/pip" install -q "psycopg[binary]>=3.1" "asyncpg>=0.29" "jsonschema>=4.18" >&2
    fi
    printf '%s\n' "$venv/bin/python"
}

# start_test_sshd DIR PORT: an OpenSSH server for the ssh:// control-socket tests, without installing the package
# (which would start a system sshd): openssh-server and libwrap0 are fetched with `apt-get download` and
# unpacked into DIR, and sshd runs as the postgres OS user (no privilege separation needed) on 127.0.0.1,
# accepting only a key made here. Prints "PORT USER KEY"; stop it with stop_test_sshd DIR.
start_test_sshd() {
    local dir=$1 port
    port=$(free_port "$2")
    [ "$(id -u)" -eq 0 ] || die "the sshd for the tests runs as the postgres user: run as root"
    mkdir -p "$dir/debs"
    if [ ! -x "$dir/root/usr/sbin/sshd" ]; then
        (cd "$dir/debs" && apt-get download -q openssh-server libwrap0 >/dev/null 2>&1) ||
            { as_root apt-get update -qq && (cd "$dir/debs" && apt-get download -q openssh-server libwrap0 >/dev/null); } ||
            die "cannot download openssh-server and libwrap0"
        for package in "$dir"/debs/*.deb; do dpkg-deb -x "$package" "$dir/root"; done
    fi
    local run
    run=$(mktemp -d /tmp/poolagent-sshd.XXXXXX)
    ssh-keygen -q -t ed25519 -N "" -f "$run/host_key"
    ssh-keygen -q -t ed25519 -N "" -f "$run/client_key"
    cp "$run/client_key.pub" "$run/authorized_keys"
    cat >"$run/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $run/host_key
PidFile $run/sshd.pid
AuthorizedKeysFile $run/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowStreamLocalForwarding yes
X11Forwarding no
PermitTTY no
CONFIG
    chown -R postgres "$run"
    chown root "$run/client_key"
    chmod 0755 "$run"
    local libraries
    libraries=$(dirname "$(find "$dir/root" -name 'libwrap.so.0' | head -n 1)")
    runuser -u postgres -- env LD_LIBRARY_PATH="$libraries" \
        "$dir/root/usr/sbin/sshd" -f "$run/sshd_config" -E "$run/sshd.log" || die "sshd did not start: $(cat "$run/sshd.log" 2>/dev/null)"
    echo "$run" >"$dir/run-dir"
    local waited=0
    until port_in_use "$port"; do
        sleep 0.1
        waited=$(( waited + 1 ))
        [ "$waited" -lt 50 ] || die "sshd did not listen on $port: $(cat "$run/sshd.log")"
    done
    printf '%s %s %s\n' "$port" postgres "$run/client_key"
}

stop_test_sshd() {
    local dir=$1 run
    [ -f "$dir/run-dir" ] || return 0
    run=$(cat "$dir/run-dir")
    [ -f "$run/sshd.pid" ] && kill "$(cat "$run/sshd.pid")" 2>/dev/null
    rm -rf "$run" "$dir/run-dir"
}
