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
# and addresses, not functions: the -dbgsym package (scripts/package) symbolises it.
#
# The code is laid out in the order of packaging/code-order.txt (scripts/code-order): every
# function in a section of its own, and the ones the daemon runs first, packed together, so that
# the kernel's 64 KiB fault-around keeps little else of the binary resident.
DREAMNET_CODE_ORDER=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/packaging/code-order.txt
RELEASE_BUILD_FLAGS=(-c release --static-swift-stdlib -Xswiftc -use-ld=lld -Xlinker -z -Xlinker pack-relative-relocs
    -Xlinker --no-export-dynamic -Xswiftc -Xfrontend -Xswiftc -function-sections
    -Xlinker "--symbol-ordering-file=$DREAMNET_CODE_ORDER" -Xlinker --no-warn-symbol-ordering)

# The programs the package ships (the daemon, the CLI, the CLI's probe program), as SwiftPM
# products: what scripts/package builds and installs, scripts/code-order profiles and
# scripts/bench measures.
# shellcheck disable=SC2034 # used by the scripts that source this file
SHIPPED_PROGRAMS=(dreamnet-healthd dreamnet-healthctl dreamnet-probe)

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

# Print the PostgreSQL server bin directory (PG_BINDIR when it holds initdb, else the newest
# under /usr/lib/postgresql): harness.cluster's choice, so the shell and Python agree.
pg_bindir() {
    _harness harness.cluster bindir || die "no PostgreSQL server found"
}

# The throwaway cluster is tools/harness/cluster.py's, for the shell as for the Python drivers:
# data in DIR/data, its socket in DIR/sock, its log in DIR/server.log, TCP on 127.0.0.1:PORT,
# the superuser postgres with trust.
_harness() {
    PYTHONPATH=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tools" && pwd) python3 -m "$@"
}

# Print the pg_ctl command line that starts or stops a throwaway cluster, for banners telling
# a person how to do it by hand.
# Usage: pg_ctl_cmdline DIR PORT start|stop
pg_ctl_cmdline() {
    _harness harness.cluster pg-ctl "$1" "$2" "$3"
}

# Start a disposable PostgreSQL cluster in DIR on 127.0.0.1:PORT.
# Usage: pg_throwaway_start DIR PORT
pg_throwaway_start() {
    (($# == 2)) || die "usage: pg_throwaway_start DIR PORT"
    _harness harness.cluster start "$1" "$2" >/dev/null
}

# Stop a cluster started by pg_throwaway_start. Safe to call from traps: it does nothing when
# the cluster is not running, resumes a stopped postmaster, and never leaves it running.
# Usage: pg_throwaway_stop DIR
pg_throwaway_stop() {
    (($# == 1)) || die "usage: pg_throwaway_stop DIR"
    _harness harness.cluster stop "$1"
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
