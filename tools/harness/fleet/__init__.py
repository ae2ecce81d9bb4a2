"""scripts/fleet's driver: a fleet of daemons against one cluster, steady, through an outage and
restarted at once (scripts/fleet's header says what each part measures). `figures` holds the pure
arithmetic (the server's connection log, connections at once, 100 ms buckets, the events' integrity),
`daemons` the fleet's processes, `render` the markdown; `python3 -m harness.fleet` runs it."""
