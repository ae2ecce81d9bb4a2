# shellcheck shell=bash
# Step c of scripts/systemd-live-test: the watchdog.
# title: watchdog: a frozen daemon is restarted, its state kept; a stopped database restarts nothing
# needs: a
# Checks that a daemon frozen with SIGSTOP is restarted by the watchdog within WatchdogSec +
# TimeoutAbortSec + RestartSec (+ slack), NRestarts going up by one, with no duplicate row in
# system_events and no second alert line; and that a database stopped for 31 s (more than 3
# watchdog periods) restarts nothing.
# Needs from a: the service running and healthy, the database up. Leaves both so.

sleep 2 # let the delivery of the last transition settle
pid0=$(prop MainPID)
nr0=$(prop NRestarts)
rows0=$(rows)
alerts0=$(alert_lines)
ct kill -STOP "$pid0"
t=$(now)
bound=$((10 + 5 + 2 + 8))
if wait_active "$pid0" "$bound"; then
    restarted=$(since "$t")
    wait_for healthy 20 || true
    sleep 2
    nr1=$(prop NRestarts)
    rows1=$(rows)
    alerts1=$(alert_lines)
    say "SIGSTOP of MainPID $pid0: restarted as $(prop MainPID) after $restarted s (bound WatchdogSec 10 + TimeoutAbortSec 5 + RestartSec 2 + 8 s slack); NRestarts $nr0 -> $nr1; system_events rows $rows0 -> $rows1; alert lines $alerts0 -> $alerts1"
    say "journal: $(ct journalctl -u dreamnet-healthd --no-pager -o cat | grep -iE 'watchdog' | tail -n 1)"
    figure "c: watchdog restart after $restarted s, NRestarts $nr0 -> $nr1, rows $rows0 -> $rows1, alert lines $alerts0 -> $alerts1"
    check "NRestarts went up by one" [ "$nr1" = $((nr0 + 1)) ]
    check "no duplicate row" [ "$rows1" = "$rows0" ]
    check "no second alert line" [ "$alerts1" = "$alerts0" ]
else
    fail "not restarted within $bound s (MainPID $(prop MainPID), $(prop ActiveState)/$(prop SubState))"
    ct kill -CONT "$pid0" 2>/dev/null || true
fi
pid1=$(prop MainPID)
nr1=$(prop NRestarts)
db_stop
t=$(now)
wait_for unhealthy 20 || fail "unhealthy once the database stopped"
sleep 31
nr2=$(prop NRestarts)
say "database stopped for $(since "$t") s (3 watchdog periods and more): state $(healthctl status 2>/dev/null | head -n 1 | awk '{print $2}'), MainPID $pid1 -> $(prop MainPID), NRestarts $nr1 -> $nr2"
figure "c: database down 31 s: NRestarts $nr1 -> $nr2"
check "a stopped database restarts nothing" [ "$nr2/$(prop MainPID)" = "$nr1/$pid1" ]
db_start
wait_for healthy 20 || fail "healthy once the database is back"
