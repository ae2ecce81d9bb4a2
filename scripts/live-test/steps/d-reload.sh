# shellcheck shell=bash
# Step d of scripts/systemd-live-test: systemctl reload.
# title: systemctl reload: applied with the same MainPID; an invalid file keeps the old one
# needs: a
# Checks that systemctl reload applies a new interval (/status says interval_ms 1500) with the
# same MainPID, and that an invalid file (interval = 5x) keeps the old configuration without
# failing the unit.
# Needs from a: the service running with the package's configuration file. Saves that file as
# /root/conf.orig and puts it back (reloaded) at the end.
# shellcheck disable=SC2154 # conf comes from the harness

ct cp "$conf" /root/conf.orig
pid=$(prop MainPID)
ct sh -c "echo 'interval = 1500ms' >>$conf"
ct systemctl reload dreamnet-healthd
interval=$(status_json | json_field interval_ms)
say "interval = 1500ms, reload: /status interval_ms $interval, MainPID $pid -> $(prop MainPID)"
check "the new interval is applied" [ "$interval" = 1500 ]
check "same MainPID" [ "$(prop MainPID)" = "$pid" ]
ct sh -c "echo 'interval = 5x' >>$conf"
code=0
ct systemctl reload dreamnet-healthd || code=$?
sleep 0.5
interval=$(status_json | json_field interval_ms)
say "interval = 5x, reload (exit $code): $(prop ActiveState)/$(prop SubState), interval_ms $interval, MainPID $(prop MainPID); Status: $(ct systemctl status dreamnet-healthd --no-pager | sed -n 's/^ *Status: //p')"
check "an invalid file keeps the old configuration, the unit is not failed" \
    bash -c "[[ $(prop ActiveState) == active && $interval == 1500 && $(prop MainPID) == $pid ]]"
ct cp /root/conf.orig "$conf"
ct systemctl reload dreamnet-healthd
