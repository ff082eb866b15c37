#!/usr/bin/env bash
# Sets up a checkout on a fresh machine: .venv, dependencies (the first run builds llama-cpp-python from
# source, about 5 minutes on 2 cores; pip caches the wheel after that) and the protobuf modules from proto/.
# Safe to run again: it only reinstalls when pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "AVADIOS needs Python 3.11 or newer (found: $("$python" --version 2>&1))" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv" >&2
    "$python" -m venv .venv
fi

stamp=.venv/.avadios-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing dependencies (the first time builds llama-cpp-python: a few minutes)" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]" >&2
    touch "$stamp"
fi

.venv/bin/python scripts/gen_proto.py >&2
