#!/usr/bin/env bash
# Makes a node's keys for the Kubernetes Secret: node.key (32-byte Ed25519 seed) and api.key (the bearer
# key of the local API), both 0600, in DIR. Refuses to overwrite: a new node key is a new node.
# Usage: k8s/make-keys.sh DIR
set -euo pipefail
dir="${1:?usage: $0 DIR}"
umask 077
mkdir -p "$dir"
for f in node.key api.key; do
    if [ -e "$dir/$f" ]; then echo "$dir/$f exists; not overwriting it" >&2; exit 1; fi
done
head -c 32 /dev/urandom >"$dir/node.key"
printf 'avk-%s' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/api.key"
echo "wrote $dir/node.key and $dir/api.key (mode 0600)" >&2
