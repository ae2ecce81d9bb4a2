# shellcheck shell=bash
# Step h of scripts/systemd-live-test: a configuration error, and a missing credential.
# title: a configuration error: exit 2, no restart loop; a missing credential: starts anyway
# needs: a
# Checks that a restart with an invalid file (interval = 5x) exits 2 and leaves the unit failed
# without a restart loop, the message in systemctl status; and that without the credential file
# the service starts anyway (not-configured) and says the credential was absent.
# Needs from a: the service running with the package's configuration file and the credential.
# Saves the file as /root/conf.orig (as d does) and puts both back; leaves the service healthy.
# shellcheck disable=SC2154 # conf comes from the harness

ct cp "$conf" /root/conf.orig
ct sh -c "echo 'interval = 5x' >>$conf"
ct systemctl restart dreamnet-healthd 2>/dev/null || true
nr=$(prop NRestarts) # a restart by hand starts the count again
sleep 5
say "after restart with interval = 5x: $(prop ActiveState)/$(prop Result), ExecMainStatus $(prop ExecMainStatus), NRestarts $nr -> $(prop NRestarts) over 5 s"
say "systemctl status: $(ct systemctl status dreamnet-healthd --no-pager 2>&1 | grep -m1 'configuration error' | sed 's/^.*dreamnet-healthd\[[0-9]*\]: //')"
check "exit 2, failed, no restart loop" bash -c "[[ $(prop ExecMainStatus) == 2 && $(prop ActiveState) == failed && $(prop NRestarts) == $nr ]]"
# systemctl status exits 3 for a failed unit: only grep's verdict counts.
status_has_error() { { ct systemctl status dreamnet-healthd --no-pager 2>&1 || true; } | grep 'configuration error: interval' >/dev/null; }
check "the message is in systemctl status" status_has_error
ct cp /root/conf.orig "$conf"
ct systemctl reset-failed dreamnet-healthd
ct mv /etc/dreamnet-healthd/database-url /root/database-url.saved
c=$(cursor)
code=0
ct systemctl restart dreamnet-healthd || code=$?
verdict=0
healthctl status >/dev/null 2>&1 || verdict=$?
note=$(ct journalctl -u dreamnet-healthd --after-cursor="$c" -o cat --no-pager | grep -m1 'credential database-url' || true)
say "without /etc/dreamnet-healthd/database-url: systemctl restart exit $code, $(prop ActiveState), status exit $verdict; log: $note"
check "the service starts without the credential file (not-configured)" [ "$code/$verdict" = 0/1 ]
check "a line says the credential was absent" grep -q absent <<<"$note"
ct mv /root/database-url.saved /etc/dreamnet-healthd/database-url
ct systemctl restart dreamnet-healthd
wait_for healthy 20 || fail "healthy with the credential back"
