# Sourced by scripts/test (after scripts/lib/setup.sh): what the container backend's tests need.
#
#   need_container_backend    installs podman, runc, catatonit (the --init every sandbox container runs) and
#                             debootstrap (as root, when missing), then builds the local test image with
#                             scripts/container_image.sh (skipped when it exists). Prints each step
#                             and its time; returns 1 with the reason when this machine cannot have them (not root),
#                             so the caller can name the skip; exits on a real failure (apt or the image build).

need_container_backend() {
    local image=${SWIFTRLM_CONTAINER_IMAGE:-localhost/swiftrlm-test-python:bookworm}
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local missing=() start
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    command -v catatonit >/dev/null 2>&1 || missing+=(catatonit)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "container backend: not installed: ${missing[*]} (sudo apt-get install -y ${missing[*]})" >&2
            return 1
        fi
        printf '\n==> %s\n' "container backend: apt-get install -y ${missing[*]}" >&2
        start=$SECONDS
        apt-get update -qq || true
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; then
            echo "container backend: apt-get install -y ${missing[*]} failed" >&2
            exit 1
        fi
        echo "container backend: installed ${missing[*]} in $((SECONDS - start)) s" >&2
    fi
    if podman image inspect "$image" >/dev/null 2>&1; then
        echo "container backend: image $image present" >&2
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "container backend: image $image missing; building it needs root (scripts/container_image.sh)" >&2
        return 1
    fi
    printf '\n==> %s\n' "container backend: building $image (debootstrap + podman import, about a minute, once)" >&2
    start=$SECONDS
    if ! "$here/container_image.sh" "$image"; then
        echo "container backend: scripts/container_image.sh failed" >&2
        exit 1
    fi
    echo "container backend: image built in $((SECONDS - start)) s" >&2
}
