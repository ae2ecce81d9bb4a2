# shellcheck shell=bash
# Step g of scripts/systemd-live-test: logrotate on the live system.
# title: logrotate -f on the live system: the next transitions land in the new file, none lost
# needs: a
# Checks that after logrotate -f with the package's logrotate file, the next two transitions
# (database stopped, then back) land in the new alerts.log and none is lost across the files.
# Needs from a: the service running and healthy, the database up. Leaves both so.

before=$(alert_lines)
ct logrotate -f /etc/logrotate.d/dreamnet-healthd
say "after rotation: $(ct sh -c 'ls -l /var/log/private/dreamnet-healthd/ | tail -n +2' | awk '{print $1, $3, $5, $9}' | xargs)"
db_stop
wait_for unhealthy 20 || fail "unhealthy after the database stopped"
db_start
wait_for healthy 20 || fail "healthy after the database came back"
sleep 1
new_lines=$(ct sh -c 'wc -l </var/log/private/dreamnet-healthd/alerts.log')
after=$(alert_lines)
say "alert lines before $before; new file $new_lines lines; all files $after"
figure "g: rotation: $before lines rotated, $new_lines in the new file, $after in all"
check "both new transitions are in the new file, none lost" [ "$new_lines/$after" = "2/$((before + 2))" ]
