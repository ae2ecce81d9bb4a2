# shellcheck shell=bash
# Step j of scripts/systemd-live-test: the sandbox as the live systemd scores it.
# title: systemd-analyze security on the live system
# needs: a
# Checks that systemd-analyze security rates the installed dreamnet-healthd.service at an
# exposure of at most 2.0.
# Needs from a: the package's unit installed.

exposure_line=$(ct systemd-analyze security dreamnet-healthd.service --no-pager | tail -n 1)
exposure=$(sed -n 's/.*: \([0-9.]*\) .*/\1/p' <<<"$exposure_line")
say "$exposure_line"
figure "j: exposure $exposure"
check "exposure at most 2.0" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }'
