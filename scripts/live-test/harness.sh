# shellcheck shell=bash
# The harness of scripts/systemd-live-test, which sources it: the steps and what each needs,
# and, inside the private mount namespace, the container (the machine's systemd as PID 1 over an
# overlay of /), its PostgreSQL, the helpers the steps use, and the logs kept when a check fails.
#
# A step is a file steps/<id>-<what>.sh; the steps run in the order of their names (C collation:
# h before h2). Its header says what it checks and, in two lines the harness reads,
#   # title: the heading printed as "== <id>. <title>"
#   # needs: the steps whose state it starts from (ids, space separated), or none
# A step is sourced in this shell after those it needs. It may call check and fail, which count
# failures, and figure, which adds a line to the figures printed at the end.

live_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- The steps --------------------------------------------------------------------------------
live_ids=()
declare -gA live_file=() live_title=() live_needs=()

live_step_field() { # live_step_field FILE FIELD: the value of the header line "# FIELD: value"
    sed -n "s/^# $2: *//p" "$1" | head -n 1
}

live_load_steps() {
    local file name id need
    while read -r file; do
        name=$(basename "$file")
        id=${name%%-*}
        live_title[$id]=$(live_step_field "$file" title)
        live_needs[$id]=$(live_step_field "$file" needs)
        [[ ${live_needs[$id]} == none ]] && live_needs[$id]=
        for need in ${live_needs[$id]}; do
            # The steps run in order: what a step needs must come before it.
            [[ " ${live_ids[*]} " == *" $need "* ]] || {
                echo "systemd-live-test: $name needs '$need', which is not a step before it" >&2
                exit 2
            }
        done
        [[ -n ${live_title[$id]} ]] || { echo "systemd-live-test: $name has no '# title:' line" >&2; exit 2; }
        live_ids+=("$id")
        live_file[$id]=$file
    done < <(printf '%s\n' "$live_dir"/steps/*.sh | LC_ALL=C sort)
}

live_list() {
    local id
    printf '%-4s %-24s %-6s %s\n' step file needs checks
    for id in "${live_ids[@]}"; do
        printf '%-4s %-24s %-6s %s\n' "$id" "$(basename "${live_file[$id]}")" "${live_needs[$id]:--}" "${live_title[$id]}"
    done
}

# live_select LIST: prints the steps to run, in their order: those LIST names (separated by
# commas or spaces) and, transitively, those they need. An unknown name is an error (status 2).
live_select() {
    local -A chosen=()
    local names=() unknown=() queue=() id need
    IFS=', ' read -r -a names <<<"$1"
    for id in "${names[@]}"; do
        [[ -n $id ]] || continue
        if [[ -n ${live_file[$id]:-} ]]; then queue+=("$id"); else unknown+=("$id"); fi
    done
    if ((${#unknown[@]} > 0)); then
        echo "systemd-live-test: no such step: ${unknown[*]} (the steps are ${live_ids[*]}; --list describes them)" >&2
        return 2
    fi
    if ((${#queue[@]} == 0)); then
        echo "systemd-live-test: no step named in '$1' (the steps are ${live_ids[*]})" >&2
        return 2
    fi
    while ((${#queue[@]} > 0)); do
        id=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -z ${chosen[$id]:-} ]] || continue
        chosen[$id]=1
        for need in ${live_needs[$id]}; do queue+=("$need"); done
    done
    for id in "${live_ids[@]}"; do
        [[ -z ${chosen[$id]:-} ]] || printf '%s\n' "$id"
    done
}

# ---- Output and checks --------------------------------------------------------------------------
failures=0
failed=()
summary=()
current_step=setup

say() { printf '   %s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
fail() {
    printf '   FAIL: %s\n' "$*"
    failures=$((failures + 1))
    failed+=("$current_step: $*")
}
check() { # check DESCRIPTION COMMAND...: runs the command, prints ok or FAIL
    local what=$1
    shift
    if "$@"; then say "ok: $what"; else fail "$what"; fi
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
figure() { summary+=("$1"); }

# ---- Inside the private mount namespace ---------------------------------------------------------
# live_main DEB DEB_UPGRADE STEP...: boots the container, starts its PostgreSQL, runs the steps.
live_main() {
    deb=$1
    deb_upgrade=$2
    shift 2
    work=$(mktemp -d /tmp/dreamnet-live.XXXXXX)
    # Logs outside the tmpfs that holds the container, which goes with the mount namespace.
    logs=$(mktemp -d /tmp/dreamnet-live-logs.XXXXXX)
    cgname=dreamnet-live-$$
    root=
    nspawn_pid=
    ct_pid=
    live_finished=0
    trap live_cleanup EXIT

    live_boot
    live_postgres
    local live_id
    for live_id in "$@"; do
        current_step=$live_id
        step "$live_id. ${live_title[$live_id]}"
        # shellcheck source=/dev/null # one of steps/*.sh
        . "${live_file[$live_id]}"
    done
    current_step=figures

    step "figures"
    local line
    for line in "${summary[@]}"; do say "$line"; done
    live_finished=1
    if ((failures > 0)); then
        local steps
        steps=$(printf '%s\n' "${failed[@]}" | cut -d: -f1 | uniq | xargs)
        echo "systemd-live-test: $failures check(s) failed (step $steps)"
        exit 1
    fi
    echo "systemd-live-test: all steps passed"
}

# What is kept when a check failed, a step stopped, or KEEP=1: the container's journal, the
# service's, the units' states, the alert log, and the failed checks, beside console.log and the
# apt logs the steps wrote there.
live_keep_logs() {
    {
        ((${#failed[@]} == 0)) || printf '%s\n' "${failed[@]}"
        ((live_finished)) || echo "$current_step: stopped (exit $1)"
    } >"$logs/failures.txt"
    if [[ -z $ct_pid ]] || ! kill -0 "$ct_pid" 2>/dev/null; then
        echo "(no journal: the container is not running)" >"$logs/journal.txt"
        return
    fi
    ct timeout 120 journalctl --no-pager -o short-precise >"$logs/journal.txt" 2>&1
    ct timeout 60 journalctl --no-pager -o short-precise -u dreamnet-healthd.service -u dreamnet-healthd.socket \
        >"$logs/dreamnet-healthd.journal.txt" 2>&1
    local unit
    {
        ct timeout 30 systemctl status --no-pager --full dreamnet-healthd.service dreamnet-healthd.socket live-postgres.service
        echo
        ct timeout 30 systemctl --failed --no-pager --full
    } >"$logs/units.txt" 2>&1
    for unit in $(ct timeout 30 systemctl --failed --no-legend --plain | awk '{print $1}'); do
        printf -- '-- %s\n' "$unit"
        ct timeout 60 journalctl --no-pager -o short-precise -u "$unit"
    done >"$logs/failed-units.journal.txt" 2>&1
    [[ -s $logs/failed-units.journal.txt ]] || rm -f "$logs/failed-units.journal.txt"
    [[ -z $root ]] || cp -a "$root/var/log/private/dreamnet-healthd" "$logs/alert-log" 2>/dev/null
}

# shellcheck disable=SC2317 # reached through the EXIT trap only
live_cleanup() {
    local status=$?
    set +eu
    local keep=${KEEP:-0}
    ((failures == 0 && status == 0)) || keep=1
    ((live_finished || status == 0)) || echo "systemd-live-test: step $current_step stopped (exit $status)"
    [[ $keep != 1 ]] || live_keep_logs "$status"
    if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid"
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$nspawn_pid" 2>/dev/null && [[ -n $ct_pid ]]; then
            kill -KILL "$ct_pid"
            sleep 0.5
            kill -KILL "$nspawn_pid" 2>/dev/null
        fi
        wait "$nspawn_pid" 2>/dev/null
    fi
    for hierarchy in systemd unified; do
        [[ -d /sys/fs/cgroup/$hierarchy/$cgname ]] || continue
        # Move ourselves out, then remove the subtree bottom-up.
        echo $$ >"/sys/fs/cgroup/$hierarchy/cgroup.procs" 2>/dev/null
        find "/sys/fs/cgroup/$hierarchy/$cgname" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    umount -R "$work" 2>/dev/null
    rm -rf "$work"
    if [[ $keep == 1 ]]; then
        echo "kept: $logs (the container's journal in journal.txt, the service's in dreamnet-healthd.journal.txt, units.txt, failures.txt, the alert log, console and apt logs)"
    else
        rm -rf "$logs"
    fi
}

# ---- The container ------------------------------------------------------------------------------
# The container's PID 1: the process named systemd below nspawn.
is_below() { # is_below PID ANCESTOR
    local pid=$1
    while [[ $pid -gt 1 ]]; do
        [[ $pid == "$2" ]] && return 0
        pid=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || return 1
        [[ -n $pid ]] || return 1
    done
    return 1
}

ct() { nsenter -t "$ct_pid" -m -u -i -n -p -C -r -w -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

live_boot() {
    step "container: systemd as PID 1 over an overlay of /"
    mount -t tmpfs -o size=2g tmpfs "$work"
    mkdir -p "$work/upper" "$work/work" "$work/root"
    ln -s "$logs" "$work/logs"
    mount -t overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" overlay "$work/root"
    root=$work/root
    # nspawn expects these nodes (the host does not run systemd).
    mount -t tmpfs tmpfs /run/systemd
    mkdir -p /run/systemd/inaccessible
    (
        cd /run/systemd/inaccessible || exit 1
        touch reg && mkdir dir && mkfifo fifo && mknod chr c 0 0 && mknod blk b 0 0
        chmod 000 reg dir fifo chr blk
    )
    for hierarchy in systemd unified; do
        mkdir -p "/sys/fs/cgroup/$hierarchy/$cgname"
        echo $$ >"/sys/fs/cgroup/$hierarchy/$cgname/cgroup.procs"
    done
    export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
    # A machine of its own: a fresh machine id, none of the host's services or timers, and no
    # policy-rc.d (the image's refuses every start, so packages could not start their services).
    rm -f "$root/etc/machine-id"
    systemd-id128 new >"$root/etc/machine-id"
    rm -rf "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/systemd/system/timers.target.wants"
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    rm -f "$root"/etc/rc?.d/S* "$root/usr/sbin/policy-rc.d"
    # The host's PATH holds directories the container has too; python etc. are not needed.
    cp "$deb" "$root/root/first.deb"
    cp "$deb_upgrade" "$root/root/upgrade.deb"

    local boot_start candidate state=
    boot_start=$(now)
    systemd-nspawn -D "$root" --boot --register=no --keep-unit --link-journal=no --private-network \
        --machine="$cgname" >"$work/logs/console.log" 2>&1 </dev/null &
    nspawn_pid=$!
    for _ in $(seq 100); do
        for candidate in $(pgrep -x systemd || true); do
            if is_below "$candidate" "$nspawn_pid" && grep -q $'^NSpid:.*\t1$' "/proc/$candidate/status"; then
                ct_pid=$candidate
                break 2
            fi
        done
        kill -0 "$nspawn_pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $ct_pid ]] || {
        cat "$work/logs/console.log"
        echo "the container did not boot"
        exit 1
    }
    # systemctl can only ask once PID 1 listens on /run/systemd/private: retry until then.
    for _ in $(seq 120); do
        state=$(ct timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
        [[ $state == running || $state == degraded ]] && break
        sleep 0.5
    done
    say "booted: $(ct systemctl --version | head -n 1), system state '$state' after $(since "$boot_start") s"
    case $state in running | degraded) ;; *) echo "the container did not come up"; exit 1 ;; esac
    [[ $state == degraded ]] && say "failed units (not ours): $(ct systemctl --failed --no-legend --plain | awk '{print $1}' | xargs)"
    return 0
}

# ---- PostgreSQL inside the container: scram over TCP on loopback, trust on its socket -----------
live_postgres() {
    password="LiveSecret$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    # shellcheck disable=SC2034 # the URL step a writes into the credential file
    url="postgresql://postgres:$password@127.0.0.1:5432/postgres"
    pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    ct install -d -o postgres -g postgres -m 0700 /var/lib/pglive
    printf '%s\n' "$password" >"$root/var/lib/pglive.pw"
    ct chown postgres /var/lib/pglive.pw
    ct runuser -u postgres -- "$pg_bin/initdb" -D /var/lib/pglive/data -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile=/var/lib/pglive.pw -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    rm -f "$root/var/lib/pglive.pw"
    db_start
    say "PostgreSQL $(psql_ct 'show server_version') in the container on 127.0.0.1:5432 (scram-sha-256)"
}
db_start() {
    ct timeout 60 systemd-run --quiet --unit=live-postgres -p User=postgres -p Type=notify -p KillSignal=SIGINT \
        -p RuntimeDirectory=live-postgres "$pg_bin/postgres" -D /var/lib/pglive/data -p 5432 \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories=/run/live-postgres -c fsync=off
}
db_stop() { ct systemctl stop live-postgres; }
psql_ct() { ct runuser -u postgres -- psql -h /run/live-postgres -U postgres -d postgres -Atqc "$1"; }

# ---- Helpers on the installed service -----------------------------------------------------------
# shellcheck disable=SC2034 # the steps edit it and restore it
conf=/etc/dreamnet-healthd/dreamnet-healthd.conf
prop() { ct systemctl show -p "$1" --value dreamnet-healthd.service; }
healthctl() { ct dreamnet-healthctl "$@"; }
status_json() { ct curl -s --max-time 5 --unix-socket /run/dreamnet-healthd/status.sock http://localhost/status; }
json_field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | head -n 1 | tr -d '"'; }
alert_lines() { ct sh -c 'cat /var/log/private/dreamnet-healthd/alerts.log* 2>/dev/null | wc -l'; }
# The ids in the alert log; alerts.log.1 is there once step g has rotated it.
alert_ids() { ct sh -c 'cat /var/log/private/dreamnet-healthd/alerts.log.1 /var/log/private/dreamnet-healthd/alerts.log 2>/dev/null || true' | sed -n 's/.*"id":"\([0-9a-f-]*\)".*/\1/p'; }
rows() { psql_ct 'select count(*) from system_events' 2>/dev/null || echo "none"; }
wait_for() { # wait_for STATE SECONDS
    healthctl wait --for "$1" --timeout "${2}s" >/dev/null
}
wait_active() { # the unit is active (running) with a new MainPID
    local old=$1 limit=$2 start
    start=$(now)
    while awk -v s="$(since "$start")" -v l="$limit" 'BEGIN { exit !(s < l) }'; do
        local pid active
        pid=$(prop MainPID)
        active=$(prop ActiveState)
        if [[ $pid != 0 && $pid != "$old" && $active == active ]]; then return 0; fi
        sleep 0.1
    done
    return 1
}
cursor() { ct journalctl -n 0 --show-cursor --quiet | sed -n 's/^-- cursor: //p'; }
