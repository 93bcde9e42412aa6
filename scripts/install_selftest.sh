#!/usr/bin/env bash
# Self-test of an installed rlm, away from the build tree.
#
# Installs the debug binaries already built (scripts/install --from .build/debug: no rebuild) into a temporary
# prefix, moves the build folder away so nothing can be found in it, and checks `rlm --version`, `rlm doctor` and
# `rlm sandbox exec` — as the caller and, when the caller is root, as an unprivileged user made for the test.
# Whatever happens, the build folder is moved back and the prefix and the user are removed.
#
# Run after `swift build`:  bash scripts/install_selftest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> install self-test: %s\n' "$*" >&2; }
fail() {
    echo "install self-test: FAIL: $*" >&2
    exit 1
}

if [ ! -x .build/debug/rlm ] || [ ! -x .build/debug/rlm-sandbox-launch ]; then
    echo "install self-test: .build/debug/rlm or rlm-sandbox-launch is missing: run swift build first" >&2
    exit 2
fi
if [ -e .build-away ]; then
    echo "install self-test: .build-away exists (left by an interrupted run?): move it back to .build" >&2
    exit 2
fi
version=$(sed -n 's/.*static let string = "\(.*\)".*/\1/p' Sources/RLM/Support/Version.swift)
[ -n "$version" ] || fail "no version string in Sources/RLM/Support/Version.swift"

prefix=""
user=""
moving=false
cleanup() {
    local status=$?
    # A second signal must not cut the clean-up short (and leave the user or the build folder behind).
    trap '' INT TERM
    if $moving && [ -d "$ROOT/.build-away" ] && [ ! -e "$ROOT/.build" ]; then
        mv "$ROOT/.build-away" "$ROOT/.build" || echo "install self-test: could not move .build-away back to .build" >&2
    fi
    if [ -n "$user" ]; then
        userdel -r "$user" 2>/dev/null || userdel "$user" || echo "install self-test: could not remove user $user" >&2
    fi
    if [ -n "$prefix" ]; then rm -rf "$prefix"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

prefix=$(mktemp -d /tmp/rlm-install-selftest.XXXXXX)
# mktemp makes it 0700; the unprivileged user must reach the binaries inside.
chmod 0755 "$prefix"
step "scripts/install --from .build/debug $prefix"
scripts/install --from .build/debug "$prefix"
[ -x "$prefix/bin/rlm" ] || fail "$prefix/bin/rlm was not installed"
[ -x "$prefix/libexec/swiftrlm/rlm-sandbox-launch" ] || fail "the launcher was not installed"
if [ "$(id -u)" = 0 ]; then
    [ "$(stat -c %U:%a "$prefix/bin/rlm")" = root:755 ] || fail "rlm is not root-owned 0755"
    [ "$(stat -c %U:%a "$prefix/libexec/swiftrlm/rlm-sandbox-launch")" = root:755 ] ||
        fail "the launcher is not root-owned 0755"
fi

step "moving .build away (to .build-away) so the installed rlm cannot use it"
moving=true
mv .build .build-away
# Out of the package, so nothing relative to the working directory can help either.
cd /

# check WHO [COMMAND-PREFIX...]: the installed rlm, run through the prefix (e.g. runuser), must work.
check() {
    local who=$1
    shift
    local out status

    step "$who: rlm --version"
    status=0
    out=$("$@" "$prefix/bin/rlm" --version 2>&1) || status=$?
    [ "$status" = 0 ] || fail "$who: rlm --version exited $status: $out"
    [ "$out" = "rlm $version" ] || fail "$who: rlm --version printed '$out', expected 'rlm $version'"
    echo "$out" >&2

    step "$who: rlm doctor"
    status=0
    out=$("$@" "$prefix/bin/rlm" doctor 2>&1) || status=$?
    printf '%s\n' "$out" >&2
    [ "$status" = 0 ] || fail "$who: rlm doctor exited $status (no sandbox could start)"
    for feature in "bubblewrap" "unprivileged uid" "user namespace" "pid namespace" "network" "seccomp" \
        "no capabilities" "empty environment" "rlimits"; do
        grep -Eq "^in force +$feature " <<<"$out" || fail "$who: rlm doctor does not report '$feature' in force"
    done
    if [ "$who" != root ]; then
        grep -q "not root: no drop to" <<<"$out" || fail "$who: rlm doctor does not say the uid is not dropped"
        grep -q "not root, so no cgroups" <<<"$out" || fail "$who: rlm doctor does not say cgroups need root"
    fi

    step "$who: echo 'print(6*7)' | rlm sandbox exec -"
    status=0
    out=$(echo 'print(6*7)' | "$@" "$prefix/bin/rlm" sandbox exec -) || status=$?
    [ "$status" = 0 ] || fail "$who: rlm sandbox exec exited $status"
    [ "$out" = 42 ] || fail "$who: rlm sandbox exec printed '$out', expected 42"
    echo "$out" >&2
}

if [ "$(id -u)" = 0 ]; then
    check root
    user="rlmst$$"
    step "an unprivileged user for the test: $user"
    useradd -m -s /bin/bash "$user" || {
        user=""
        fail "useradd failed"
    }
    # A clean environment: root's (pyenv under /root, say) is no business of this user's.
    check "$user" runuser -u "$user" -- env -i HOME="/home/$user" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8
else
    check "$(id -un)"
fi

step "a missing launcher is reported with where it was looked for and how to fix it"
mv "$prefix/libexec/swiftrlm/rlm-sandbox-launch" "$prefix/launcher-away"
status=0
out=$(echo 'print(1)' | "$prefix/bin/rlm" sandbox exec - 2>&1) || status=$?
mv "$prefix/launcher-away" "$prefix/libexec/swiftrlm/rlm-sandbox-launch"
echo "$out" >&2
[ "$status" = 2 ] || fail "a missing launcher made rlm sandbox exec exit $status, expected 2"
grep -q "$prefix/libexec/swiftrlm/rlm-sandbox-launch" <<<"$out" || fail "the error does not say where it looked"
grep -q "scripts/install" <<<"$out" || fail "the error does not say how to fix it"

step "passed"
