# shellcheck shell=bash
# Step h2 of scripts/systemd-live-test: a clean start and stop leave a clean journal.
# title: the journal of a clean start and stop holds no warning that is not about the database
# needs: a
# Checks that two stops and starts of the service log no warning (or worse) naming dreamnet
# that is not about the database, and no 'Failed to set thread priority' line nor any other
# from libdispatch.
# Needs from a: the service installed, configured and running. Leaves it running (healthy).

c=$(cursor)
ct systemctl stop dreamnet-healthd
ct systemctl start dreamnet-healthd
ct systemctl stop dreamnet-healthd
ct systemctl start dreamnet-healthd
warnings=$(ct journalctl --after-cursor="$c" -p warning --no-pager -o short-monotonic | grep -v -- '-- No entries --' |
    grep -i dreamnet | grep -viE 'database|unhealthy' || true)
priority_lines=$(ct journalctl --after-cursor="$c" --no-pager -o cat | grep -ciE 'thread priority|libdispatch' || true)
say "journal lines from the unit: $(ct journalctl --after-cursor="$c" -u dreamnet-healthd --no-pager -o cat | wc -l), warnings or worse not about the database: $(grep -c . <<<"$warnings" || true); libdispatch lines ('Failed to set thread priority' and others): $priority_lines"
[[ -n $warnings ]] && say "$warnings"
check "no warning that is not about the database" [ -z "$warnings" ]
check "no 'Failed to set thread priority' line, nor any other from libdispatch" [ "$priority_lines" = 0 ]
wait_for healthy 20 || true
