"""scripts/bench's driver: seven parts, each beside the tools people would use instead
(scripts/bench's header says what each part measures). One module per part (deadline, steady,
load, detection, replay, startup, cost), what they share in common, procstat (/proc and cgroup
readers) and faults (a black hole, a relay that hangs queries), the markdown in render; the goals
the parts' figures are checked against are harness.goals. `python3 -m harness.bench` runs it."""
