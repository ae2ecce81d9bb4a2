# shellcheck shell=bash
# Step a of scripts/systemd-live-test: the package installs, starts and answers.
# title: apt install; systemctl start returns after READY=1 with a verdict; who may query
# needs: none
# Checks that apt installs the .deb and the service comes up not-configured (exit 1) before it
# has a URL; that with the URL in the credential file `systemctl start` returns after READY=1
# with a verdict (healthy) and systemctl status shows the STATUS line; that a member of the
# group dreamnet-health may query and anyone else gets exit 3 and a hint naming the group; and
# that the installed `dreamnet-healthctl probe` runs its program from /usr/libexec (the CLI
# links no libpq).
# Needs only the harness (the container, its PostgreSQL, /root/first.deb). Leaves for the
# steps after it: the package installed, the URL in /etc/dreamnet-healthd/database-url,
# flap_threshold = 100, the service enabled and healthy, the users member and outsider.
# shellcheck disable=SC2154 # work and url come from the harness

t=$(now)
ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/first.deb >"$work/logs/apt-install.log" 2>&1 ||
    { cat "$work/logs/apt-install.log"; fail "apt-get install"; exit 1; }
say "apt-get install ./…deb: $(since "$t") s; enabled: $(ct systemctl is-enabled dreamnet-healthd.service), active: $(prop ActiveState)"
say "credential file: $(ct stat -c '%a %U:%G %s bytes' /etc/dreamnet-healthd/database-url); group: $(ct getent group dreamnet-health)"
installed_state=$(healthctl status >/dev/null 2>&1; echo $?)
check "installed service answers not-configured (exit 1) before it has a URL" [ "$installed_state" = 1 ]
# The steps flip the state more often than a real database does: without a higher threshold
# flap detection would hold back the transitions of the later steps, as it should.
ct sh -c "echo 'flap_threshold = 100' >>/etc/dreamnet-healthd/dreamnet-healthd.conf"
printf '%s\n' "$url" >"$work/url"
ct sh -c "cat >/etc/dreamnet-healthd/database-url" <"$work/url"
rm -f "$work/url"
ct systemctl stop dreamnet-healthd
t=$(now)
ct systemctl start dreamnet-healthd
ready=$(since "$t")
code=0
out=$(healthctl status) || code=$?
say "systemctl start returned after $ready s; status right after: exit $code, $(echo "$out" | head -n 1)"
figure "a: systemctl start to READY $ready s"
check "a verdict right after start (healthy, exit 0)" [ "$code" = 0 ]
status_line=$(ct systemctl status dreamnet-healthd --no-pager | sed -n 's/^ *Status: //p')
say "systemctl status: Status: $status_line"
check "systemctl status shows the STATUS line" grep -q 'database healthy' <<<"$status_line"
code=0
out=$(ct sh -c 'DATABASE_URL=$(cat /etc/dreamnet-healthd/database-url) dreamnet-healthctl probe') || code=$?
links=$(ct ldd /usr/bin/dreamnet-healthctl | awk '{print $1}' | xargs)
program=$(ct sh -c 'test -x /usr/libexec/dreamnet-healthd/dreamnet-probe && echo installed || true')
say "dreamnet-healthctl probe: exit $code: $(echo "$out" | head -n 1); the CLI links: $links; its probe program: ${program:-missing}"
check "the installed CLI probes (exit 0) with /usr/libexec/dreamnet-healthd/dreamnet-probe, and links no libpq" \
    bash -c "[[ $code == 0 && ${program:-missing} == installed && ' $links ' != *libpq* ]]"
ct useradd -m -G dreamnet-health member
ct useradd -m outsider
code=0
ct runuser -u member -- dreamnet-healthctl status >/dev/null || code=$?
say "as member of dreamnet-health: exit $code"
check "a member of the group may query" [ "$code" = 0 ]
code=0
out=$(ct runuser -u outsider -- dreamnet-healthctl status 2>&1) || code=$?
say "as outsider: exit $code: $out"
check "an outsider gets exit 3 and a hint naming the group" bash -c "[[ $code == 3 ]] && grep -q 'dreamnet-health' <<<\"\$1\"" _ "$out"
