#!/usr/bin/env bash
# Builds the container backend's test image without a registry: a Debian bookworm root made by debootstrap
# (variant minbase, plus python3) from the apt mirror this machine already uses, imported into the engine.
# python3, not python3-minimal alone: the minimal package has no json, ctypes or most of the standard library,
# which model-written code expects (and the doctor's probe uses ctypes).
#
#   scripts/container_image.sh [IMAGE]        default localhost/swiftrlm-test-python:bookworm
#
# Does nothing when the image already exists (CI runs on the same machine again and again). Needs root (debootstrap)
# and podman (or ENGINE=docker with a running daemon). Environment: ENGINE, MIRROR (an apt mirror URL; default: the
# first Debian mirror in /etc/apt/sources.list*), SUITE (default bookworm).
set -euo pipefail

image=${1:-${SWIFTRLM_CONTAINER_IMAGE:-localhost/swiftrlm-test-python:bookworm}}
engine=${ENGINE:-podman}
suite=${SUITE:-bookworm}

say() { printf 'container_image: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

command -v "$engine" >/dev/null 2>&1 || die "$engine is not installed (apt-get install -y podman runc catatonit)"
if "$engine" image inspect "$image" >/dev/null 2>&1; then
    say "$image is already present; nothing to do (remove it with: $engine rmi $image)"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root; run as root, or build $image another way"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install -y debootstrap)"

# The Debian mirror apt uses here: deb822 .sources files (URIs:) or one-line sources.list entries (deb URL SUITE).
mirror_from_apt() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    local f url
    for f in "${files[@]}"; do
        [ -r "$f" ] || continue
        url=$(awk '
            /^[[:space:]]*URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }
            /^[[:space:]]*deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) {
                if ($i ~ /\/debian\/?$/) { print $i; exit } else break } }
        ' "$f")
        if [ -n "$url" ]; then
            echo "$url"
            return
        fi
    done
    echo "http://deb.debian.org/debian"
}
mirror=${MIRROR:-$(mirror_from_apt)}

work=$(mktemp -d /var/tmp/swiftrlm-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
say "debootstrap --variant=minbase --include=python3 $suite $root $mirror"
start=$SECONDS
if ! debootstrap --variant=minbase --include=python3 "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1
then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed (full log above); is $mirror reachable? set MIRROR=URL to use another mirror"
fi
say "debootstrap took $((SECONDS - start)) s"

# Nothing the sandbox needs: package caches and lists, documentation, locales. Keeps the image (and import) small.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
"$root"/usr/bin/python3 -V >/dev/null 2>&1 || die "the new root has no working /usr/bin/python3"

start=$SECONDS
say "$engine import → $image"
tar -C "$root" --numeric-owner -c . |
    "$engine" import --quiet --change 'CMD ["/usr/bin/python3"]' --change 'WORKDIR /tmp' - "$image" >/dev/null ||
    die "$engine import failed"
say "import took $((SECONDS - start)) s; $("$engine" image inspect --format '{{.Size}}' "$image") bytes"
