# shellcheck shell=bash
# Step i of scripts/systemd-live-test: an upgrade while events are spooled.
# title: upgrade with the database down and events spooled: restarted on the new binary, nothing lost
# needs: a
# Checks that apt installing the second package (DEB_UPGRADE) with the database down installs
# the new version and restarts the service on the new binary, keeping the spool and the state
# (no new transition); and that once the database is back every event is delivered exactly
# once (system_events against the alert log).
# Needs from a: the first package installed and healthy, /root/upgrade.deb from the harness.
# Leaves the upgraded package running and healthy, the database up.
# shellcheck disable=SC2154 # work, deb and deb_upgrade come from the harness

db_stop
wait_for unhealthy 20 || fail "unhealthy before the upgrade"
for _ in $(seq 50); do
    pending=$(status_json | sed -n 's/.*"pending":\([0-9]*\).*/\1/p')
    [[ ${pending:-0} -ge 1 ]] && break
    sleep 0.2
done
pid=$(prop MainPID)
old_inode=$(ct stat -c %i /usr/sbin/dreamnet-healthd)
alerts_before=$(alert_lines)
t=$(now)
ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold /root/upgrade.deb \
    >"$work/logs/apt-upgrade.log" 2>&1 || { cat "$work/logs/apt-upgrade.log"; fail "apt-get install of the upgrade"; }
upgrade_time=$(since "$t")
new_pid=$(prop MainPID)
exe=$(ct readlink "/proc/$new_pid/exe")
pending_after=$(status_json | sed -n 's/.*"pending":\([0-9]*\).*/\1/p')
# shellcheck disable=SC2016 # dpkg-query's format
say "$(ct dpkg-query -W -f '${Version}' dreamnet-healthd) installed in $upgrade_time s; MainPID $pid -> $new_pid running $exe (inode $old_inode -> $(ct stat -c %i /usr/sbin/dreamnet-healthd)); spooled $pending -> $pending_after; state $(healthctl status 2>/dev/null | head -n 1 | awk '{print $2}'); alert lines $alerts_before -> $(alert_lines)"
# shellcheck disable=SC2016 # dpkg-query's format
check "the new version is installed" [ "$(ct dpkg-query -W -f '${Version}' dreamnet-healthd)" = "$(dpkg-deb -f "$deb_upgrade" Version)" ]
on_new_binary() { [[ $new_pid != "$pid" && $exe == /usr/sbin/dreamnet-healthd ]]; }
check "restarted on the new binary" on_new_binary
kept_spool() { [[ ${pending:-0} -ge 1 && $pending_after == "$pending" && $(alert_lines) == "$alerts_before" ]]; }
check "spool and state kept (events still spooled, no new transition)" kept_spool
db_start
wait_for healthy 20 || fail "healthy after the upgrade"
for _ in $(seq 100); do
    [[ $(status_json | sed -n 's/.*"pending":\([0-9]*\).*/\1/p') == 0 ]] && break
    sleep 0.2
done
table_ids=$(psql_ct 'select id from system_events order by id')
total=$(psql_ct 'select count(*) from system_events')
distinct=$(psql_ct 'select count(distinct id) from system_events')
all_alert_ids=$(alert_ids | sort)
say "system_events: $total rows, $distinct distinct ids; alert-log events: $(wc -l <<<"$all_alert_ids")"
figure "i: upgrade $(dpkg-deb -f "$deb" Version) -> $(dpkg-deb -f "$deb_upgrade" Version) in $upgrade_time s with $pending spooled; rows $total, distinct $distinct"
check "every event delivered exactly once" bash -c "[[ $total == $distinct && \"\$1\" == \"\$2\" ]]" _ "$table_ids" "$all_alert_ids"
