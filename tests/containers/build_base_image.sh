#!/usr/bin/env bash
# Builds localhost/debian-base from Debian packages with debootstrap, for machines that cannot pull images
# from a registry (this one: only Debian, PyPI and npm are reachable). The Dockerfile's BASE_IMAGE build arg
# then points at it. The host's extra CA certificates (a TLS-inspecting egress proxy, if any) and its pip
# settings are copied in so apt and pip inside the build reach the registries the host reaches; they are
# this machine's trust settings, not the project's, which is why they live in the local base and not in
# the Dockerfile.
# Usage: tests/containers/build_base_image.sh [podman args...]   (run as root)
set -euo pipefail
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
image="${BASE_IMAGE:-localhost/debian-base}"
podman=(podman "$@")

work="$(mktemp -d /var/tmp/avadios-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"

echo "==> debootstrap $suite (minbase) from $mirror" >&2
nice -n 10 debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
    # pip vendors its own CA list; point it at the system store, which now has the host's extra CAs.
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
fi
# Keep the image small: no apt lists or caches (the Dockerfile runs apt-get update itself).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb

echo "==> importing as $image" >&2
tar -C "$root" -c . | "${podman[@]}" import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
"${podman[@]}" image inspect --format '{{.Id}} {{.Size}}' "$image"
