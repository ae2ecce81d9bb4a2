# shellcheck shell=bash
# Helpers shared by scripts/run and scripts/test. Source this file; it only
# defines functions and changes no shell options of its caller.

# Debian packages needed to build (libpq, libsystemd via pkg-config), to run
# throwaway PostgreSQL clusters, and to query the status socket by hand.
# The fault-matrix tests also use strace (fsync errors), faketime (a wall clock
# run fast), util-linux's unshare (private mounts) and a C compiler (a wall-clock
# shift preloaded into the daemon). The managed-database tests start Debian's PgBouncer in
# front of a cluster with TLS, whose certificates openssl makes.
DREAMNET_DEPS=(libpq-dev libsystemd-dev libsqlite3-dev pkg-config postgresql curl logrotate systemd
    strace faketime util-linux gcc pgbouncer openssl prometheus)

# Release builds link the Swift runtime and Foundation statically: the installed binaries need
# no Swift toolchain on the machine, and the daemon maps less at run time. They are linked by
# the toolchain's lld with packed relative relocations (DT_RELR, glibc 2.36): the 52 000
# relocations of a position-independent Swift binary take 11 KB instead of 1.4 MB, which every
# start read, and the daemon's resident set is 0.6-0.8 MiB smaller (BENCHMARKS.md). And they
# export no dynamic symbols: the toolchain's static-stdlib arguments export every Swift symbol
# of the binary (12 000 in the CLI), which nothing here looks up at run time; without them the
# daemon's resident set is another 1.0-1.4 MiB smaller. A crash report then names the build ID
# and addresses, not functions: symbolise it with the unstripped binary of the same build.
RELEASE_BUILD_FLAGS=(-c release --static-swift-stdlib -Xswiftc -use-ld=lld -Xlinker -z -Xlinker pack-relative-relocs
    -Xlinker --no-export-dynamic)

# Strips binaries as the package installs them (and as dh_strip does): the symbol table and
# debug information go, the dynamic symbols (the libraries' imports, with the flags above) stay.
# scripts/bench reports the sizes this leaves.
strip_as_packaged() {
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$@"
}

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

is_root() {
    [[ $(id -u) -eq 0 ]]
}

# Install whatever is missing from DREAMNET_DEPS. apt-get runs only when
# something is missing, so repeated runs stay fast and need no privileges.
ensure_deps() {
    local pkg missing=()
    for pkg in "${DREAMNET_DEPS[@]}"; do
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done

    if ((${#missing[@]} > 0)); then
        local sudo=()
        if ! is_root; then
            command -v sudo >/dev/null 2>&1 ||
                die "missing packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}"
            sudo=(sudo)
        fi
        log "installing missing packages: ${missing[*]}"
        # noninteractive: CI has no stdin, and debconf must not prompt.
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
        # The tests start PgBouncer themselves, on ports of their own, and want only
        # Prometheus' promtool (for examples/): the packaged services (ports 6432, 9090) are
        # not wanted, here or in the containers booted from this root.
        local service
        for service in pgbouncer prometheus; do
            if [[ " ${missing[*]} " == *" $service "* ]]; then
                "${sudo[@]}" systemctl stop "$service" >/dev/null 2>&1 || true
                "${sudo[@]}" systemctl disable "$service" >/dev/null 2>&1 || true
            fi
        done
    fi

    # The toolchain is not a Debian package; it has to be installed already.
    command -v swift >/dev/null 2>&1 ||
        die "swift not found on PATH; install a Swift 6 toolchain from https://www.swift.org/install/linux/ and add its usr/bin to PATH"
}

# Print the newest PostgreSQL server bin directory. pg_config --bindir is not
# used because it belongs to libpq-dev and may name a directory without initdb.
# PG_BINDIR, when already set to a directory with initdb, wins.
pg_bindir() {
    if [[ -n ${PG_BINDIR:-} && -x ${PG_BINDIR}/initdb ]]; then
        printf '%s\n' "$PG_BINDIR"
        return 0
    fi
    local dirs=() d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb ]] && dirs+=("$d")
    done
    ((${#dirs[@]} > 0)) || die "no PostgreSQL server found under /usr/lib/postgresql (is the postgresql package installed?)"
    printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1
}

# initdb and postgres refuse to run as root, so as root every PostgreSQL tool
# runs as the postgres user; as anyone else it runs directly.
_pg_as_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Print a shell-quoted pg_ctl command line for a throwaway cluster, for
# banners telling a person how to stop or restart it by hand.
# Usage: pg_ctl_cmdline DIR PORT start|stop
pg_ctl_cmdline() {
    local dir=$1 port=$2 action=$3 bindir cmd=()
    bindir=$(pg_bindir) || return 1
    if is_root; then
        cmd+=(runuser -u postgres --)
    fi
    cmd+=("$bindir/pg_ctl" -D "$dir/data")
    case $action in
    start) cmd+=(-l "$dir/server.log" -w -t 30 -o "$(_pg_server_opts "$dir" "$port")" start) ;;
    stop) cmd+=(-m fast -w stop) ;;
    *) die "pg_ctl_cmdline: unknown action: $action" ;;
    esac
    local line
    line=$(printf '%q ' "${cmd[@]}")
    printf '%s\n' "${line% }"
}

_pg_server_opts() {
    # TCP on loopback only; the socket lives in DIR so nothing touches
    # /var/run/postgresql or the distro cluster. fsync off: data is disposable.
    printf -- '-p %s -k %s -c listen_addresses=127.0.0.1 -c fsync=off' "$2" "$1/sock"
}

# Start a disposable PostgreSQL cluster: data in DIR/data, Unix socket in
# DIR/sock, log in DIR/server.log, TCP on 127.0.0.1:PORT, user postgres with
# trust authentication. DIR must be absolute or relative to the current dir.
# Usage: pg_throwaway_start DIR PORT
pg_throwaway_start() {
    (($# == 2)) || die "usage: pg_throwaway_start DIR PORT"
    local dir port=$2 bindir
    dir=$(cd "$1" && pwd) || die "pg_throwaway_start: no such directory: $1"
    bindir=$(pg_bindir) || return 1

    mkdir -p "$dir/data" "$dir/sock"
    : >"$dir/server.log"
    if is_root; then
        # mktemp -d makes 0700 directories; postgres must be able to enter DIR
        # and own what it writes to.
        chmod 0755 "$dir"
        chown postgres:postgres "$dir/data" "$dir/sock" "$dir/server.log"
        runuser -u postgres -- test -x "$dir" ||
            die "pg_throwaway_start: user postgres cannot enter $dir (a parent directory is not traversable)"
    fi
    chmod 0700 "$dir/data"

    # Run from DIR so the tools never start in a directory postgres cannot read.
    if ! (cd "$dir" && _pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
        -E UTF8 --locale=C.UTF-8 --no-sync) >"$dir/initdb.log" 2>&1; then
        printf 'initdb failed; its output:\n' >&2
        cat "$dir/initdb.log" >&2
        return 1
    fi

    if ! (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
        -w -t 30 -o "$(_pg_server_opts "$dir" "$port")" start) >"$dir/pg_ctl.log" 2>&1; then
        printf 'PostgreSQL failed to start on port %s; pg_ctl said:\n' "$port" >&2
        cat "$dir/pg_ctl.log" >&2
        printf -- '--- %s ---\n' "$dir/server.log" >&2
        cat "$dir/server.log" >&2
        return 1
    fi
}

# Stop a cluster started by pg_throwaway_start. Safe to call from traps: it
# does nothing when the cluster is not running, and never leaves it running.
# Usage: pg_throwaway_stop DIR
pg_throwaway_stop() {
    (($# == 1)) || die "usage: pg_throwaway_stop DIR"
    local dir=$1 bindir pid
    [[ -f $dir/data/postmaster.pid ]] || return 0
    bindir=$(pg_bindir) || return 1
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    # A postmaster suspended with kill -STOP (to simulate a hang) would never
    # see the shutdown request.
    if [[ $pid =~ ^[0-9]+$ ]]; then
        kill -CONT "$pid" 2>/dev/null || true
    fi
    if ! (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop) >/dev/null 2>&1; then
        # Fast shutdown timed out (stuck client?): immediate mode cannot.
        (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop) >/dev/null 2>&1 || {
            printf 'warning: could not stop PostgreSQL in %s\n' "$dir" >&2
            return 1
        }
    fi
}

# Print a TCP port on 127.0.0.1 that is free right now (the kernel picks it).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
        return
    fi
    # No python3: try random high ports until nothing answers on one.
    local port i
    for ((i = 0; i < 50; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "free_port: no free port found"
}
