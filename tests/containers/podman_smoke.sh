#!/usr/bin/env bash
# Runs compose.yaml for real under podman + runc, without a Docker engine: builds the image (from a local
# debootstrap base when there is none), brings the stack up, waits for health, checks the keys in the home
# volume, sends a chat completion through the OpenAI API with the API key from that volume, scales
# inference to 2 and sees both replicas serve, then brings everything down.
# Slow (the first image build compiles llama.cpp, ~10 minutes on 2 cores), so it is not part of CI.
#
# Usage (as root, after scripts/setup.sh): tests/containers/podman_smoke.sh
#   KEEP=1 leaves the stack and its volumes up; AVADIOS_SMOKE_PORT picks the host port (default 18740).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"

export AVADIOS_IMAGE="${AVADIOS_IMAGE:-localhost/avadios:smoke}"
export AVADIOS_BASE_IMAGE="${AVADIOS_BASE_IMAGE:-localhost/debian-base}"
export AVADIOS_API_PUBLISH_PORT="${AVADIOS_SMOKE_PORT:-18740}"
# Two replicas on a small machine: one llama.cpp thread each, so they do not fight over the same cores.
export AVADIOS_INFERENCE_THREADS="${AVADIOS_INFERENCE_THREADS:-1}"
project=avadios-smoke
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
for key in node.key api.key; do
    mode="$(stat -c '%a %u' "$home/$key")"
    [ "$mode" = "600 10001" ] || fail "$key is '$mode', want mode 600 owned by uid 10001"
done
say "home volume: node.key and api.key are mode 600, uid 10001; home dir $(stat -c '%a' "$home")"
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
