# shellcheck shell=bash
# Step k of scripts/systemd-live-test: remove, then purge.
# title: apt remove, then apt purge
# needs: a
# Checks that apt remove stops the service, leaves it impossible to start and keeps the
# configuration and the credential; and that apt purge leaves nothing of the package: none of
# the paths it installed or made, and no other file named *dreamnet* written in the container.
# Needs from a: the package installed (either version). Removes it: it is the last step.
# shellcheck disable=SC2154 # work and conf come from the harness

ct env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q dreamnet-healthd >"$work/logs/apt-remove.log" 2>&1
say "after remove: service $(ct systemctl is-active dreamnet-healthd.service), is-enabled '$(ct systemctl is-enabled dreamnet-healthd.service 2>&1)', binaries $(ct sh -c 'ls /usr/sbin/dreamnet-healthd /usr/bin/dreamnet-healthctl /usr/libexec/dreamnet-healthd/dreamnet-probe 2>/dev/null | wc -l'), config kept: $(ct sh -c 'ls /etc/dreamnet-healthd | xargs')"
check "stopped" [ "$(ct systemctl is-active dreamnet-healthd.service)" != active ]
cannot_start() { ! ct systemctl start dreamnet-healthd 2>/dev/null; }
check "cannot be started (no unit file; masked, as debhelper does)" cannot_start
check "configuration and credential kept until purge" ct test -e /etc/dreamnet-healthd/database-url -a -e "$conf"
ct env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q dreamnet-healthd >"$work/logs/apt-purge.log" 2>&1
looked_for=(/etc/dreamnet-healthd /etc/logrotate.d/dreamnet-healthd /var/lib/dreamnet-healthd /var/lib/private/dreamnet-healthd
    /var/log/dreamnet-healthd /var/log/private/dreamnet-healthd /run/dreamnet-healthd /run/dreamnet-healthd.sock
    /usr/sbin/dreamnet-healthd /usr/bin/dreamnet-healthctl /usr/libexec/dreamnet-healthd /usr/lib/systemd/system/dreamnet-healthd.service
    /usr/lib/systemd/system/dreamnet-healthd.socket /etc/systemd/system/dreamnet-healthd.service
    /etc/systemd/system/multi-user.target.wants/dreamnet-healthd.service /etc/systemd/system/sockets.target.wants/dreamnet-healthd.socket
    /usr/lib/sysusers.d/dreamnet-healthd.conf /usr/share/doc/dreamnet-healthd /usr/share/man/man8/dreamnet-healthd.8.gz
    /usr/share/bash-completion/completions/dreamnet-healthctl /var/lib/systemd/deb-systemd-helper-enabled/dreamnet-healthd.service.dsh-also
    /var/lib/dpkg/info/dreamnet-healthd.list)
left=()
for path in "${looked_for[@]}"; do ct test -e "$path" -o -L "$path" && left+=("$path"); done
# Anything else of that name the package could have left, in what the container wrote.
strays=$(cd "$work/upper" && find . -name '*dreamnet*' ! -path './root/*' ! -path './home/*' ! -path './tmp/*' | sed 's|^\.||' | xargs)
say "after purge, looked for ${#looked_for[@]} paths: ${#left[@]} left ${left[*]}; other files named *dreamnet* written in the container: ${strays:-none}"
# shellcheck disable=SC2016 # dpkg-query's format
say "dpkg: '$(ct dpkg-query -W -f '${db:Status-Abbrev}' dreamnet-healthd 2>&1)'; unit files: '$(ct systemctl list-unit-files 'dreamnet-healthd*' --no-legend | xargs)'; group kept: $(ct getent group dreamnet-health || echo none)"
check "nothing of the package is left" [ "${#left[@]}/${strays:-none}" = 0/none ]
