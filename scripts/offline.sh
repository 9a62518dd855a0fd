#!/usr/bin/env bash
# Runs a command in a new network namespace that has only a loopback interface, so nothing
# it starts can send a packet to 169.254.169.254 or any other host: the tests' promise to
# talk only to loopback is enforced by the kernel, not by care. Needs root (CI is root).
set -euo pipefail
exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' offline "$@"
