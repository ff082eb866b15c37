#!/usr/bin/env bash
# Runs compose.yaml for real under podman + runc, without a Docker engine: builds the image (from a local
# debootstrap base when there is none), makes the wallet in the home volume, brings the stack up (NATS,
# cache, ledger, inference, storage, discovery, verifier, voice, gateway), waits for health and runs every container's
# healthcheck, checks the keys in the home volume, sends a chat completion through the OpenAI API with the
# API key from that volume, reads the wallet (funded by the solo genesis) and the peers through the API,
# reaches the node from this host as a peer would (a signed P2P Hello over the published TCP port, a DHT
# ping over the published UDP port), scales inference to 2 and sees both replicas serve, then brings
# everything down.
# Slow (the first image build compiles llama.cpp, ~10 minutes on 2 cores), so it is not part of CI.
#
# Usage (as root, after scripts/setup.sh): tests/containers/podman_smoke.sh
#   KEEP=1 leaves the stack and its volumes up; AVADIOS_SMOKE_PORT picks the API's host port (default 18740);
#   AVADIOS_SMOKE_PROJECT the compose project (default avadios-smoke); AVADIOS_P2P_PORT / AVADIOS_DHT_PORT
#   the peer ports (default 14001/14002, clear of a node already running on this host).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"

export AVADIOS_IMAGE="${AVADIOS_IMAGE:-localhost/avadios:smoke}"
export AVADIOS_BASE_IMAGE="${AVADIOS_BASE_IMAGE:-localhost/debian-base}"
export AVADIOS_API_PUBLISH_PORT="${AVADIOS_SMOKE_PORT:-18740}"
export AVADIOS_P2P_PORT="${AVADIOS_P2P_PORT:-14001}" AVADIOS_DHT_PORT="${AVADIOS_DHT_PORT:-14002}"
# Peers must be told an address that reaches this host: its own IP (the one it would use to go out).
host_ip="$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
export AVADIOS_ADVERTISE_HOST="${AVADIOS_ADVERTISE_HOST:-${host_ip:-$(hostname -I | awk '{print $1}')}}"
# Two replicas on a small machine: one llama.cpp thread each, so they do not fight over the same cores.
export AVADIOS_INFERENCE_THREADS="${AVADIOS_INFERENCE_THREADS:-1}"
project="${AVADIOS_SMOKE_PROJECT:-avadios-smoke}"
api="http://127.0.0.1:$AVADIOS_API_PUBLISH_PORT"

# podman as this machine kind needs it: runc (crun fails here), explicit ulimits (the defaults are above
# what the VM allows), storage of its own. Config files instead of flags, so podman-compose and
# `podman build` pick them up too.
conf="$(mktemp -d /tmp/avadios-smoke.XXXXXX)"
cat >"$conf/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
EOF
cat >"$conf/storage.conf" <<'EOF'
[storage]
driver = "overlay"
graphroot = "/var/lib/podman-root"
runroot = "/run/podman-run"
EOF
export CONTAINERS_CONF="$conf/containers.conf" CONTAINERS_STORAGE_CONF="$conf/storage.conf"
compose=("$root/.venv/bin/podman-compose" -p "$project" -f compose.yaml)

t0=$SECONDS
say() { printf 'SMOKE [%4ds] %s\n' "$((SECONDS - t0))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

down() {
    local rc=$?
    if [ "${KEEP:-0}" = 1 ]; then say "KEEP=1: leaving the stack up"; return; fi
    if [ "$rc" != 0 ]; then
        say "failed: last logs of every container"
        for c in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
            echo "----- $c"; podman logs --tail 15 "$c" 2>&1 || true
        done
    fi
    remove_project
    rm -rf "$conf"
    say "down (exit $rc)"
}
# podman-compose down stops only as many replicas as compose.yaml declares (a scaled-up inference_2 would
# survive and join the next run's NATS), so everything carrying the project's label goes too.
remove_project() {
    "${compose[@]}" down -v >/dev/null 2>&1 || true
    local label="label=io.podman.compose.project=$project"
    # (stderr: without systemd podman complains that it has no healthcheck timers to remove)
    podman ps -aq --filter "$label" | xargs -r podman rm -f -t 5 >/dev/null 2>&1
    podman volume ls -q --filter "$label" | xargs -r podman volume rm -f >/dev/null
    podman network ls -q --filter "$label" | xargs -r podman network rm -f >/dev/null
}
trap down EXIT

# Waits until /health is 200 and shows at least $1 inference replicas serving.
wait_healthy() {
    local want="$1" deadline=$((SECONDS + ${2:-300}))
    while [ $SECONDS -lt $deadline ]; do
        if "$py" - "$api" "$want" <<'EOF' 2>/dev/null; then return 0; fi
import sys, httpx
r = httpx.get(sys.argv[1] + "/health", timeout=3)
serving = [i for i in r.json()["services"].get("inference", []) if i["status"] == "serving"]
sys.exit(0 if r.status_code == 200 and len(serving) >= int(sys.argv[2]) else 1)
EOF
        sleep 2
    done
    return 1
}

podman --version >/dev/null || fail "podman is not installed (apt-get install podman runc)"
if ! podman image exists "$AVADIOS_BASE_IMAGE"; then
    say "no $AVADIOS_BASE_IMAGE: building it with debootstrap"
    bash tests/containers/build_base_image.sh
fi

say "building $AVADIOS_IMAGE (from $AVADIOS_BASE_IMAGE)"
tb=$SECONDS
nice -n 10 podman build --quiet --build-arg BASE_IMAGE="$AVADIOS_BASE_IMAGE" -t "$AVADIOS_IMAGE" . >/dev/null
say "built in $((SECONDS - tb))s: $(podman image inspect --format '{{.Size}}' "$AVADIOS_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'), user $(podman image inspect --format '{{.Config.User}}' "$AVADIOS_IMAGE")"

remove_project
# The solo genesis funds <home>/wallet.seed when the ledger first starts: make the wallet first, as a user would.
# (podman-compose prints lines of its own before the command's output: take the JSON object from the rest.)
"${compose[@]}" run --rm --no-deps ledger avadios wallet new --json >"$conf/wallet.json" 2>"$conf/wallet.log" \
    || { cat "$conf/wallet.log" "$conf/wallet.json"; fail "wallet new"; }
address="$("$py" -c 'import json, sys; t = open(sys.argv[1]).read(); print(json.loads(t[t.index("{"):t.rindex("}") + 1])["address"])' \
    "$conf/wallet.json")" || { cat "$conf/wallet.json"; fail "wallet new printed no address"; }
say "wallet made in the home volume: ${address:0:24}..."
say "compose up"
tu=$SECONDS
"${compose[@]}" up -d >"$conf/up.log" 2>&1 || { cat "$conf/up.log"; fail "compose up"; }
wait_healthy 1 300 || fail "/health did not turn 200 within 300s"
say "healthy in $((SECONDS - tu))s: $(podman ps --filter "label=io.podman.compose.project=$project" --format '{{.Names}}={{.Status}}' | tr '\n' ' ')"

# Podman runs healthchecks from systemd timers, and this machine has no systemd (and podman-compose skips
# depends_on health conditions before podman 4.6): run each container's healthcheck once by hand, which
# proves the compose healthcheck commands (python -m avadios.probe ...) work inside the containers.
run_healthchecks() {
    local checks="" c deadline
    for c in $(podman ps --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
        # A replica may still be loading its model when another one already made /health 200.
        deadline=$((SECONDS + 120))
        until podman healthcheck run "$c" >/dev/null 2>&1; do
            [ $SECONDS -lt $deadline ] || fail "healthcheck of $c still failing after 120s"
            sleep 2
        done
        checks="$checks $c"
    done
    say "healthcheck commands pass in:$checks"
}
run_healthchecks

home="$(podman volume inspect --format '{{.Mountpoint}}' "${project}_home")"
for key in node.key api.key wallet.seed; do
    mode="$(stat -c '%a %u' "$home/$key")"
    [ "$mode" = "600 10001" ] || fail "$key is '$mode', want mode 600 owned by uid 10001"
done
[ -s "$home/genesis.json" ] || fail "the ledger wrote no genesis.json into the home"
ledger_dir="$(podman volume inspect --format '{{.Mountpoint}}' "${project}_ledger")"
[ -s "$ledger_dir/CURRENT" ] || fail "no RocksDB in the ledger volume"
say "home volume: node.key, api.key, wallet.seed mode 600, uid 10001; home dir $(stat -c '%a' "$home"); genesis.json in it; ledger RocksDB in its own volume"
api_key="$(cat "$home/api.key")"

"$py" - "$api" "$api_key" <<'EOF' || fail "chat completion"
import sys, time, httpx
from openai import OpenAI
api, key = sys.argv[1], sys.argv[2]
assert httpx.get(api + "/v1/models", timeout=10).status_code == 401, "the API must refuse a request without the key"
client = OpenAI(base_url=api + "/v1", api_key=key)
t = time.monotonic()
reply = client.chat.completions.create(
    model="gemma-3-270m-q4_k_m", temperature=0, max_tokens=24,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
)
answer = reply.choices[0].message.content
print(f"SMOKE chat: {answer!r} ({reply.usage.completion_tokens} tokens, {time.monotonic() - t:.2f}s); "
      f"without the key: 401")
assert "Paris" in answer, answer
# The same reproducible request again: answered from tier 0, the cache container's RocksDB volume.
for _ in range(20):
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-3-270m-q4_k_m", temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    if raw.headers.get("x-avadios-tier") == "0":
        break
    time.sleep(0.25)
assert raw.headers.get("x-avadios-tier") == "0", raw.headers
assert raw.parse().choices[0].message.content == answer
print("SMOKE the same request again: answered from tier 0 (cache), same text")
EOF

# The wallet and the network through the API, as the dashboard and `avadios wallet/peers` see them; then this
# host acts as a peer: a signed P2P Hello over the published TCP port (the certificate must prove the node key
# in the home volume) and a DHT ping over the published UDP port (the DHT believes a datagram only when it
# comes from the address its signed credential names, so this also shows no NAT rewrote the addresses).
"$py" - "$api" "$api_key" "$home" "$address" <<'EOF' || fail "wallet, peers, P2P and DHT"
import asyncio, os, sys, tempfile, time, httpx
from pathlib import Path
from avadios import identity
from avadios.multiaddr import parse
from avadios.records import dht_id_for
from avadios.v1 import discovery_pb2, p2p_pb2
from avadios.services.discovery.dht import DhtNode
from avadios.services.gateway.p2p.node import P2PNode

api, key, home, address = sys.argv[1:5]
auth = {"Authorization": f"Bearer {key}"}
host = os.environ["AVADIOS_ADVERTISE_HOST"]
p2p_port, dht_port = int(os.environ["AVADIOS_P2P_PORT"]), int(os.environ["AVADIOS_DHT_PORT"])
node = identity.load(Path(home))
assert httpx.get(api + "/api/wallet", timeout=10).status_code == 401, "the wallet route must need the key"
wallet = httpx.get(api + "/api/wallet", headers=auth, timeout=10).json()
assert wallet["address"] == address and wallet["spendable"] == 1_000_000_000, wallet
print(f"SMOKE GET /api/wallet: {wallet['address'][:24]}… spendable {wallet['spendable']} micro-AUTOM (solo genesis)")
peers = httpx.get(api + "/api/peers", headers=auth, timeout=10).json()
assert peers["node_id"] == node.node_id, (peers, node.node_id)
assert peers["dht_address"] == f"/ip4/{host}/udp/{dht_port}", peers
print(f"SMOKE GET /api/peers: node {peers['node_id'][:16]}…, DHT {peers['dht_address']}, {len(peers['peers'])} peers")


async def as_a_peer() -> None:
    me = identity.load_or_create(Path(tempfile.mkdtemp()))

    async def no_profile() -> discovery_pb2.SignedRecord:
        return discovery_pb2.SignedRecord()

    p2p = P2PNode(me, "127.0.0.1", 0, no_profile, run_dir=Path(tempfile.mkdtemp()))
    target = parse(f"/ip4/{host}/tcp/{p2p_port}/p2p/{node.node_id}")
    reply, sender, rtt = await p2p.request(target, p2p_pb2.HelloRequest(), p2p_pb2.HelloReply)
    profile = discovery_pb2.CapabilityProfile.FromString(reply.profile.payload)
    assert sender == node.node_id and profile.node_id == node.node_id, (sender, profile.node_id)
    assert f"/ip4/{host}/udp/{dht_port}" in profile.addresses, profile.addresses
    print(f"SMOKE P2P Hello to {target.address}: signed reply from the node key, {rtt:.1f} ms; "
          f"profile addresses {list(profile.addresses)}, models {[m.name for m in profile.models]}")
    dht = DhtNode(me, host, 0, rpc_timeout_s=3)
    await dht.listen()
    try:
        started = time.perf_counter()
        found = await dht.ping((host, dht_port))
        assert found is not None, "no verified DHT answer"
        assert found.id == dht_id_for(node.public_key), "a DHT answer from another id"
        print(f"SMOKE DHT ping to {host}:{dht_port}/udp: verified answer from the node's DHT id, "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")
    finally:
        dht.stop()


asyncio.run(as_a_peer())
EOF

ids() { podman ps --filter "label=io.podman.compose.project=$project" --format '{{.ID}}' | sort | tr '\n' ' '; }
before="$(ids)"
say "scale inference to 2"
ts=$SECONDS
"${compose[@]}" up -d --scale inference=2 >"$conf/scale.log" 2>&1 || { cat "$conf/scale.log"; fail "scale"; }
wait_healthy 2 300 || fail "the second inference replica did not become ready within 300s"
say "2 inference replicas serving after $((SECONDS - ts))s"
kept=0
for id in $before; do case " $(ids) " in *" $id "*) kept=$((kept + 1)) ;; esac; done
say "containers kept running across the scale: $kept of $(echo $before | wc -w)"
run_healthchecks

"$py" - "$api" "$api_key" <<'EOF' || fail "requests across replicas"
import sys, httpx
from concurrent.futures import ThreadPoolExecutor
from openai import OpenAI
api, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=api + "/v1", api_key=key)
def ask(i: int) -> str:
    # temperature > 0: not reproducible, so the cache cannot answer and every request reaches inference.
    r = client.completions.create(model="gemma-3-270m-q4_k_m", prompt=f"Q: Name a colour ({i}).\nA:",
                                  max_tokens=8, temperature=0.8)
    return r.choices[0].text
with ThreadPoolExecutor(4) as pool:
    answers = list(pool.map(ask, range(8)))
served = {i["instance"]: int(i["requests_served"])
          for i in httpx.get(api + "/health", timeout=5).json()["services"]["inference"]}
print(f"SMOKE 8 completions done; requests served per inference replica: {served}")
assert len(served) == 2 and all(n > 0 for n in served.values()), "both replicas must have served requests"
EOF

say "PASS"
