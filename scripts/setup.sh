#!/usr/bin/env bash
# Sets up a checkout on a fresh machine: .venv, dependencies (the first run builds llama-cpp-python from
# source, about 5 minutes on 2 cores; pip caches the wheel after that) and the protobuf modules from proto/.
#
#   scripts/setup.sh          what a node needs to run (`./avadios up`)
#   scripts/setup.sh dev      that plus the test and lint tools (`./avadios test`)
#
# Where it runs as root with apt-get (Debian, Ubuntu) it also installs the system packages: espeak-ng (the
# node's text-to-speech) and, for dev, chromium + chromium-driver (the dashboard's browser tests) and sox.
# Elsewhere it says what is missing; the node runs without them and the tests that need them say why they skip.
# Safe to run again: it only reinstalls when pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

flavour="${1:-runtime}"
case "$flavour" in
    runtime) extras="" ; system_packages="espeak-ng" ;;
    dev) extras="[dev]" ; system_packages="espeak-ng chromium chromium-driver sox" ;;
    *) echo "usage: scripts/setup.sh [runtime|dev]" >&2; exit 2 ;;
esac

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "AVADIOS needs Python 3.11 or newer (found: $("$python" --version 2>&1))" >&2
    exit 1
fi

# Runs "$@" with its output in $log, showing one live line: what it is doing now and the time elapsed
# (on a terminal it redraws; elsewhere, as in CI, it prints a line every 30 s). On failure: the log's tail.
with_progress() {
    local what="$1" log="$2"
    shift 2
    local start=$SECONDS last_print=-30 status=0
    "$@" >"$log" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        local now=$((SECONDS - start))
        local step
        step="$(grep -E '^(Collecting|Building wheel|Installing|Setting up|Unpacking|  Building|Successfully)' "$log" 2>/dev/null | tail -n 1 | cut -c1-70 || true)"
        if [ -t 2 ]; then
            printf '\r\033[K==> %s: %s (%dm%02ds)' "$what" "${step:-starting}" $((now / 60)) $((now % 60)) >&2
        elif [ $((now - last_print)) -ge 30 ]; then
            printf '==> %s: %s (%dm%02ds)\n' "$what" "${step:-starting}" $((now / 60)) $((now % 60)) >&2
            last_print=$now
        fi
        sleep 1
    done
    wait "$pid" || status=$?
    [ -t 2 ] && printf '\r\033[K' >&2
    if [ "$status" -ne 0 ]; then
        echo "==> $what failed (exit $status); the last lines of $log:" >&2
        tail -n 30 "$log" >&2
        exit "$status"
    fi
    local took=$((SECONDS - start))
    printf '==> %s: done in %dm%02ds\n' "$what" $((took / 60)) $((took % 60)) >&2
}

missing=""
for package in $system_packages; do
    command_name="$package"
    [ "$package" = chromium-driver ] && command_name=chromedriver
    command -v "$command_name" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        install_system() {
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y --no-install-recommends $missing || { apt-get update && apt-get install -y --no-install-recommends $missing; }
        }
        with_progress "installing system packages:$missing" /tmp/avadios-apt.log install_system
    else
        echo "==> not installed:$missing (needs root and apt-get; install them with your package manager)." >&2
        echo "    The node runs without them; text-to-speech and the browser tests say why they are skipped." >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv" >&2
    "$python" -m venv .venv
fi

stamp=".venv/.avadios-installed-$flavour"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    with_progress "upgrading pip" .venv/pip-upgrade.log .venv/bin/python -m pip install --upgrade pip
    with_progress "installing avadios$extras (the first time builds llama-cpp-python: about 5 minutes)" \
        .venv/pip-install.log .venv/bin/python -m pip install --progress-bar off -e ".$extras"
    touch "$stamp"
    # dev includes everything the runtime needs
    [ "$flavour" = dev ] && touch .venv/.avadios-installed-runtime
fi

.venv/bin/python scripts/gen_proto.py >&2
