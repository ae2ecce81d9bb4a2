# shellcheck shell=bash
# Step e of scripts/systemd-live-test: the database password stays secret.
# title: a URL with a password in the credential file: healthy, and the password is nowhere
# needs: a
# Checks that the service is healthy with the password from the credential file, and that the
# password appears in none of: systemctl show of both units, the whole journal (export format),
# /status, /events, /health, /metrics, the alert log, the spool, the process list.
# Needs from a: the URL with the harness's password in the credential file, the service healthy.
# shellcheck disable=SC2154 # password comes from the harness

code=0
healthctl status >/dev/null || code=$?
check "healthy with the password from the credential (exit $code)" [ "$code" = 0 ]
leaks=()
count_in() { # count_in NAME COMMAND...: lines holding the password
    local n
    n=$("$@" 2>/dev/null | grep -a -c -F "$password" || true)
    say "$1…: ${n:-0} occurrences"
    [[ ${n:-0} == 0 ]] || leaks+=("$1")
}
count_in systemctl-show ct systemctl show dreamnet-healthd.service dreamnet-healthd.socket
count_in journal ct journalctl -o export --no-pager
for endpoint in /status /events /health /metrics; do
    count_in "curl$endpoint" ct curl -s --unix-socket /run/dreamnet-healthd/status.sock "http://localhost$endpoint"
done
count_in alert-log ct sh -c 'cat /var/log/private/dreamnet-healthd/*'
count_in spool ct sh -c 'cat /var/lib/private/dreamnet-healthd/*'
count_in process-list ct ps -eo args
check "the password is in none of them" [ "${#leaks[@]}" = 0 ]
