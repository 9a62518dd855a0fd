#!/usr/bin/env bash
# Fleet-scale simulation (agent/benches/scale.rs; figures in docs/benchmarks.md): N agents
# bootstrap at once against one azure-sim (vault throttled, identity endpoint 410 at first)
# and one fake systemd. Every option is passed to the bench:
#
#   scripts/bench-scale.sh                               500 agents, Azure's 4000 per 10 s, 410 for 30 s
#   scripts/bench-scale.sh --no-jitter                   the same with the backoff's jitter off
#   scripts/bench-scale.sh --limit 200 --window 10       a vault 20x tighter (a 10,000-node fleet, scaled)
#   scripts/bench-scale.sh --agents 50 --gone 5          a quick look
#
# Runs as root or not; needs dbus-daemon (scripts/deps/apt.txt). Bounded: agents still
# running after --deadline seconds (default 900) are killed and counted as failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Each agent holds a few sockets; the in-process simulator and bus hold one per agent.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec cargo bench -q -p canarie-agent --bench scale -- "$@"
