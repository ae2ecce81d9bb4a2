# shellcheck shell=bash
# Step b of scripts/systemd-live-test: socket activation, and a restart under clients.
# title: socket activation: the first request starts the service and gets a verdict
# needs: a
# Checks that with the service disabled and dreamnet-healthd.socket enabled the first
# dreamnet-healthctl status starts the service and gets a verdict, that a member of the group
# may query the socket unit's socket, and that three clients asking through a restart of the
# service are never refused and always get a verdict.
# Needs from a: the package installed and configured (healthy), the user member. Leaves the
# socket unit disabled and the plain service enabled, restarted and healthy.
# shellcheck disable=SC2154 # work comes from the harness

ct systemctl disable --now dreamnet-healthd.service >/dev/null 2>&1
ct systemctl enable --now dreamnet-healthd.socket >/dev/null 2>&1
say "service $(prop ActiveState), socket $(ct systemctl is-active dreamnet-healthd.socket): $(ct stat -c '%A %U:%G' /run/dreamnet-healthd.sock) /run/dreamnet-healthd.sock"
t=$(now)
code=0
out=$(healthctl status 2>&1) || code=$?
first=$(since "$t")
say "first dreamnet-healthctl status (default socket path): exit $code after $first s: $(echo "$out" | head -n 1)"
figure "b: socket-activated first status answered in $first s (exit $code)"
check "the first request started the service and got a verdict (exit 0)" [ "$code" = 0 ]
check "the service was started by the socket" [ "$(prop ActiveState)" = active ]
code=0
ct runuser -u member -- dreamnet-healthctl status >/dev/null 2>&1 || code=$?
check "a member may query the socket unit's socket (exit $code)" [ "$code" = 0 ]
# Three clients keep asking through a restart of the service.
clients=()
for i in 1 2 3; do
    # shellcheck disable=SC2016 # expanded by the container's bash
    ct bash -c 'end=$((SECONDS + 6)); while ((SECONDS < end)); do dreamnet-healthctl status >/dev/null 2>>/tmp/client.err; echo $?; done' \
        >"$work/client.$i" &
    clients+=($!)
done
sleep 1.5
pid_before=$(prop MainPID)
t=$(now)
ct systemctl restart dreamnet-healthd.service
restart_time=$(since "$t")
wait "${clients[@]}"
answers=$(cat "$work"/client.* | wc -l)
ok=$(cat "$work"/client.* | grep -c '^0$' || true)
refused=$(ct sh -c 'grep -ciE "refused|no such file" /tmp/client.err 2>/dev/null' || true)
say "restart (MainPID $pid_before -> $(prop MainPID)) took $restart_time s; clients asked $answers times: $ok healthy, codes $(cat "$work"/client.* | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')"
# Read inside the container: its /tmp is not the overlay's.
client_errors=$(ct sh -c 'sort /tmp/client.err 2>/dev/null | uniq -c | head -n 5' || true)
[[ -n $client_errors ]] && say "client errors: $(tr -s "\n " "  " <<<"$client_errors")"
figure "b: restart under 3 clients $restart_time s, $answers requests, $ok healthy, ${refused:-0} refused"
check "no client was refused during the restart" [ "${refused:-0}" = 0 ]
check "every answer was a verdict" [ "$ok" = "$answers" ]
ct systemctl disable --now dreamnet-healthd.socket >/dev/null 2>&1
ct systemctl enable dreamnet-healthd.service >/dev/null 2>&1
ct systemctl restart dreamnet-healthd.service
wait_for healthy 20 || fail "healthy again on the plain service"
