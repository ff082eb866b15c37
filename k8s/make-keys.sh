#!/usr/bin/env bash
# Makes a node's secrets for the Kubernetes Secret, all 0600 in DIR: node.key (32-byte Ed25519 seed),
# api.key (the bearer key of the local API) and wallet.seed (the node's AUTOM wallet; its 24-word recovery
# phrase is printed once: write it down). Refuses to overwrite: a new node key is a new node, a new wallet
# seed a new wallet.
# Usage: k8s/make-keys.sh DIR   (needs the `avadios` CLI for the wallet; AVADIOS=/path/to/avadios picks one)
set -euo pipefail
dir="${1:?usage: $0 DIR}"
avadios="${AVADIOS:-avadios}"
command -v "$avadios" >/dev/null || { echo "$avadios not found: install avadios (scripts/setup.sh) or set AVADIOS" >&2; exit 1; }
umask 077
mkdir -p "$dir"
for f in node.key api.key wallet.seed; do
    if [ -e "$dir/$f" ]; then echo "$dir/$f exists; not overwriting it" >&2; exit 1; fi
done
head -c 32 /dev/urandom >"$dir/node.key"
printf 'avk-%s' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/api.key"
"$avadios" wallet new --home "$dir"
echo "wrote $dir/node.key, $dir/api.key and $dir/wallet.seed (mode 0600)" >&2
