# shellcheck shell=bash
# Step f of scripts/systemd-live-test: the transitions in journald.
# title: journalctl MESSAGE_ID=<transition id> lists each transition with its fields
# needs: a
# Checks that every journal entry with the transition MESSAGE_ID has the DREAMNET_* fields and
# a PRIORITY matching its severity (healthy 6, unhealthy 2, not-configured 4), and that the
# journal lists the same transitions (by event id) as the alert log.
# Needs from a: the service installed and running; the transitions of the steps before it.
# shellcheck disable=SC2154 # work comes from the harness

transition_id=5f1c0e7a9b2d4c3e8a6f0d1b2c3e4f5a
ct journalctl MESSAGE_ID=$transition_id -o json --no-pager >"$work/transitions.json"
entries=$(wc -l <"$work/transitions.json")
bad=0
while read -r line; do
    to=$(json_field DREAMNET_TO <<<"$line")
    priority=$(json_field PRIORITY <<<"$line")
    case $to in healthy) want=6 ;; unhealthy) want=2 ;; not-configured) want=4 ;; *) want='?' ;; esac
    for field in DREAMNET_EVENT_ID DREAMNET_EVENT_TYPE DREAMNET_SEVERITY DREAMNET_FROM DREAMNET_REASON DREAMNET_PAYLOAD; do
        grep -q "\"$field\"" <<<"$line" || { bad=$((bad + 1)); say "missing $field: $line"; }
    done
    [[ $priority == "$want" ]] || { bad=$((bad + 1)); say "to $to with PRIORITY $priority (want $want)"; }
    say "$(json_field DREAMNET_FROM <<<"$line") -> $to PRIORITY $priority id $(json_field DREAMNET_EVENT_ID <<<"$line")"
done <"$work/transitions.json"
journal_ids=$(sed -n 's/.*"DREAMNET_EVENT_ID":"\([0-9a-f-]*\)".*/\1/p' "$work/transitions.json" | sort)
logged_ids=$(ct sh -c 'cat /var/log/private/dreamnet-healthd/alerts.log*' | grep '"database.health.transition"' | sed -n 's/.*"id":"\([0-9a-f-]*\)".*/\1/p' | sort)
say "$entries journal entries; alert-log transitions $(wc -l <<<"$logged_ids")"
figure "f: $entries transitions in the journal by MESSAGE_ID"
check "every transition has its fields and a PRIORITY matching its severity" [ "$bad" = 0 ]
check "the journal lists the same transitions as the alert log" [ "$journal_ids" = "$logged_ids" ]
