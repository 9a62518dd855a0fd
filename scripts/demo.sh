#!/usr/bin/env bash
# The main job until the VM cluster demo exists: azure-sim on loopback stands in for Azure,
# and `canarie-agent plan` runs against it for the example server node, in a sandbox root.
# It shows the managed-identity token being fetched, the join token read from Key Vault
# (never printed) and every file bootstrap would write. Nothing outside the sandbox changes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --bins -q

work=$(mktemp -d)
sim_pid=""
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

config=${1:-examples/server.json}
python3 - "$config" "$work/scenario.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
jt = config["join_token"]
json.dump({"user_data_json": config,
           "secrets": {jt["secret"]: {"value": "demo-join-token-not-shown"}}},
          open(sys.argv[2], "w"))
PY
target/debug/azure-sim --scenario "$work/scenario.json" --ca-out "$work/ca.pem" \
  --ready-file "$work/ready.json" --request-log "$work/requests.jsonl" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
[ -s "$work/ready.json" ] || { echo "demo: azure-sim did not start:"; cat "$work/sim.log"; exit 1; }
imds_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["imds_url"])' "$work/ready.json")
vault_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vault_url"])' "$work/ready.json")

mkdir -p "$work/root/etc"
echo 00000000000000000000000000demo01 > "$work/root/etc/machine-id"
echo "== canarie-agent plan for $config (IMDS $imds_url, Key Vault $vault_url)"
status=0
target/debug/canarie-agent plan --root "$work/root" --imds-url "$imds_url" \
  --vault-url "$vault_url" --ca-file "$work/ca.pem" || status=$?
echo "== what azure-sim served"
python3 - "$work/requests.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f'  {r["service"]:5} {r["method"]} {r["path"]} -> {r["status"]}')
PY
exit $status
