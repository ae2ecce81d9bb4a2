# shellcheck shell=bash
# Step j2 of scripts/systemd-live-test: scale_to_zero under the hardened unit.
# title: scale_to_zero: the sandboxed service reads the socket table and follows an application
# needs: a
# Checks that with scale_to_zero on, the service (in its sandbox: RestrictAddressFamilies with
# AF_NETLINK, ProtectProc=invisible) reads the host's socket table: /status says "following"
# while another user's psql session sends a query every second, and "resting" for seconds on end
# once that session goes quiet (a table it could not read would keep it "following", and the
# journal would say so).
# Needs from a: the service running and healthy with the URL of the container's PostgreSQL.
# Restores the configuration file and reloads.
# shellcheck disable=SC2154 # conf and password come from the harness

ct cp "$conf" /root/conf.before-j2
ct sh -c "printf 'scale_to_zero = on\ninterval = 500ms\nsuspend_after = 60m\n' >>$conf"
ct systemctl reload dreamnet-healthd
t=$(now)
# The application: one session of another user, a query a second for 6 s, then idle for 12 s.
# shellcheck disable=SC2016 # expanded by the container's shell
ct runuser -u outsider -- env PGPASSWORD="$password" sh -c \
    '{ for i in 1 2 3 4 5 6; do echo "SELECT 1;"; sleep 1; done; sleep 12; } | psql -h 127.0.0.1 -U postgres -d postgres -Atq >/dev/null' &
application=$!
following=0
resting_run=0
longest_rest=0
while awk -v s="$(since "$t")" 'BEGIN { exit !(s < 17) }'; do
    phase=$(status_json | sed -n 's/.*"sleep":{[^}]*"phase":"\([a-z]*\)".*/\1/p')
    elapsed=$(since "$t")
    if awk -v s="$elapsed" 'BEGIN { exit !(s < 6) }'; then
        [[ $phase == following ]] && following=$((following + 1))
    elif [[ $phase == resting ]]; then
        resting_run=$((resting_run + 1))
        ((resting_run > longest_rest)) && longest_rest=$resting_run
    else
        resting_run=0
    fi
    sleep 0.2
done
wait "$application" || true
unreadable=$(ct journalctl -u dreamnet-healthd --no-pager -o cat | grep -c "cannot read the host's socket table" || true)
say "scale_to_zero: 'following' in $following samples while the application was busy; 'resting' for $longest_rest samples in a row (0.2 s apart) once it was quiet; socket table unreadable: $unreadable"
figure "j2: resting for $longest_rest samples in a row after the application went quiet"
check "following while the application sends" [ "$following" -ge 1 ]
check "resting once it is quiet, for 5 s on end" [ "$longest_rest" -ge 25 ]
check "the sandboxed service reads the socket table" [ "$unreadable" = 0 ]
ct cp /root/conf.before-j2 "$conf"
ct systemctl reload dreamnet-healthd
check "healthy again with the configuration before this step" wait_for healthy 15
