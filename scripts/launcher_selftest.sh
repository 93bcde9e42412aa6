#!/usr/bin/env bash
# Self-test for rlm-sandbox-launch (Sources/CRLMLaunch/main.c).
#
# Run as root (the privilege drop and the cgroup checks need it):
#   scripts/launcher_selftest.sh
#
# Environment:
#   LAUNCHER=/path/to/rlm-sandbox-launch   use this binary instead of building
#                                          one in a private temp dir with $CC
#   CC=gcc                                 compiler used for the build
#   BWRAP=/usr/bin/bwrap
#
# Prints PASS/FAIL per check (NOTE for informational lines) and exits non-zero
# if any check failed.

set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/Sources/CRLMLaunch/main.c"
BWRAP=${BWRAP:-/usr/bin/bwrap}
PY=/usr/bin/python3          # NOT the pyenv shim: it must exist inside the sandbox
SANDBOX_UID=65534
SANDBOX_GID=65534

passes=0
fails=0
pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
note() { echo "NOTE: $*"; }

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: launcher_selftest.sh needs root (uid drop and cgroup checks); nothing was checked" >&2
    exit 77
fi
for f in "$BWRAP" "$PY"; do
    if [ ! -x "$f" ]; then
        echo "launcher_selftest.sh: $f not found" >&2
        exit 2
    fi
done

WORK=$(mktemp -d /tmp/rlm-launcher-selftest.XXXXXX)
CG=""
cleanup() {
    # Kill only processes that this script put into its own test cgroup.
    if [ -n "$CG" ] && [ -d "$CG" ]; then
        local i p procs
        for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            # (cgroupfs files report size 0, so read them instead of test -s)
            procs=$(cat "$CG/cgroup.procs" 2>/dev/null)
            [ -n "$procs" ] || break
            for p in $procs; do
                kill -9 "$p" 2>/dev/null
            done
            sleep 0.1
        done
        rmdir "$CG" 2>/dev/null || echo "NOTE: could not rmdir $CG"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------
if [ -n "${LAUNCHER:-}" ]; then
    L=$LAUNCHER
else
    L="$WORK/rlm-sandbox-launch"  # inside the private work dir, removed at exit
    if ${CC:-gcc} -O2 -Wall -Wextra -Werror -o "$L" "$SRC"; then
        pass "build: ${CC:-gcc} -O2 -Wall -Wextra -Werror"
    else
        fail "build: ${CC:-gcc} -O2 -Wall -Wextra -Werror"
        exit 1
    fi
fi

LOPTS=(--uid "$SANDBOX_UID" --gid "$SANDBOX_GID" --seccomp --new-keyring
       --rlimit nofile=64 --rlimit core=0 --rlimit nproc=256
       --rlimit as=1073741824)
BW_BASE=("$BWRAP" --unshare-all --unshare-user --disable-userns
         --new-session --ro-bind /usr /usr --symlink usr/lib /lib
         --symlink usr/lib64 /lib64 --symlink usr/bin /bin --proc /proc
         --dev /dev --size 67108864 --tmpfs /tmp --chdir /tmp --clearenv
         --setenv HOME /tmp)
BW=("${BW_BASE[@]:0:4}" --die-with-parent "${BW_BASE[@]:4}")

# --------------------------------------------------------------------------
# 1. Usage errors -> exit 2 with exactly one "rlm-sandbox-launch: " line
# --------------------------------------------------------------------------
expect_exit() { # expect_exit WANT DESCRIPTION -- launcher args...
    local want=$1 desc=$2 rc lines
    shift 2
    "$L" "$@" </dev/null >"$WORK/out" 2>"$WORK/err"
    rc=$?
    lines=$(wc -l <"$WORK/err")
    if [ "$rc" = "$want" ] && [ "$lines" = 1 ] &&
        grep -q '^rlm-sandbox-launch: ' "$WORK/err"; then
        pass "$desc -> exit $rc: $(cut -c1-110 "$WORK/err")"
    else
        fail "$desc -> exit $rc (want $want), stderr ($lines lines): $(head -c 300 "$WORK/err")"
    fi
}
expect_exit 2 "usage: no arguments"
expect_exit 2 "usage: no '--'" --seccomp "$BWRAP" --version
expect_exit 2 "usage: nothing after '--'" --seccomp --
expect_exit 2 "usage: relative bwrap path" -- bwrap --version
expect_exit 2 "usage: bad rlimit name" --rlimit bogus=1 -- "$BWRAP" --version
expect_exit 2 "usage: bad rlimit value" --rlimit nofile=abc -- "$BWRAP" --version
expect_exit 2 "usage: negative rlimit value" --rlimit nofile=-1 -- "$BWRAP" --version
expect_exit 2 "usage: rlimit without '='" --rlimit nofile -- "$BWRAP" --version
expect_exit 2 "usage: unknown option" --frobnicate -- "$BWRAP" --version
expect_exit 2 "usage: --uid 0 refused" --uid 0 --gid 65534 -- "$BWRAP" --version
expect_exit 2 "usage: --gid 0 refused" --uid 65534 --gid 0 -- "$BWRAP" --version
expect_exit 2 "usage: --uid without --gid" --uid 65534 -- "$BWRAP" --version
expect_exit 126 "setup failure: missing cgroup dir" --cgroup /nonexistent/rlm -- "$BWRAP" --version
expect_exit 127 "exec failure: missing bwrap" -- /nonexistent/bwrap --version

# --------------------------------------------------------------------------
# 2. Launcher alone (exec python directly, no bwrap): env, identity, keyring
# --------------------------------------------------------------------------
out=$(FAKE_SECRET=s3cr3t "$L" --uid "$SANDBOX_UID" --gid "$SANDBOX_GID" \
      --rlimit NOFILE=32 --rlimit Core=unlimited -- \
      "$PY" -I -c '
import os, resource
print(repr(open("/proc/self/environ", "rb").read()), os.getresuid(), os.getresgid(),
      os.getgroups(), resource.getrlimit(resource.RLIMIT_NOFILE),
      resource.getrlimit(resource.RLIMIT_CORE) == (resource.RLIM_INFINITY,) * 2)' 2>&1)
want="b'' (65534, 65534, 65534) (65534, 65534, 65534) [] (32, 32) True"
if [ "$out" = "$want" ]; then
    pass "direct exec: empty environ, resuid/resgid 65534, no groups, case-insensitive rlimits, 'unlimited'"
else
    fail "direct exec: got [$out], want [$want]"
fi

# Keyring: root without --new-keyring shares the host session keyring; with it,
# every launch gets a fresh one.
KEYPROBE='
import ctypes, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = {"x86_64": 250, "aarch64": 219}[platform.machine()]
# keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
print(libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0)))'
k_host=$("$PY" -I -c "$KEYPROBE")
k_same=$("$L" -- "$PY" -I -c "$KEYPROBE")
k_new1=$("$L" --new-keyring -- "$PY" -I -c "$KEYPROBE")
k_new2=$("$L" --new-keyring --uid "$SANDBOX_UID" --gid "$SANDBOX_GID" -- "$PY" -I -c "$KEYPROBE")
k_new3=$("$L" --new-keyring --uid "$SANDBOX_UID" --gid "$SANDBOX_GID" -- "$PY" -I -c "$KEYPROBE")
if [ "$k_same" = "$k_host" ] && [ "${k_new1:-0}" -gt 0 ] && [ "$k_new1" != "$k_host" ] &&
    [ "${k_new2:-0}" -gt 0 ] && [ "$k_new2" != "$k_host" ] && [ "$k_new2" != "$k_new3" ]; then
    pass "--new-keyring: fresh session keyring per launch (host=$k_host, without=$k_same, with=$k_new1/$k_new2/$k_new3)"
else
    fail "--new-keyring: host=$k_host without=$k_same with=$k_new1/$k_new2/$k_new3"
fi

# setsid() while already a process-group leader must be tolerated (EPERM).
if (set -m; "$L" -- /usr/bin/true & wait $!); then
    pass "setsid EPERM (already group leader) is tolerated"
else
    fail "launcher failed when started as a process-group leader"
fi

# --------------------------------------------------------------------------
# 3. Full sandbox: identity, caps, environ, fds, seccomp, rlimits, signals
# --------------------------------------------------------------------------
PROBE='
import ctypes, errno, fcntl, os, platform, resource, signal, sys

def rep(ok, name, detail=""):
    print(("OK " if ok else "BAD ") + name + ("  [%s]" % (detail,) if detail != "" else ""), flush=True)

st = {}
for line in open("/proc/self/status"):
    k, _, v = line.partition(":")
    st[k] = v.strip()

r, g = os.getresuid(), os.getresgid()
rep(r == (65534,) * 3, "uid inside is 65534 (not 0)", r)
rep(g == (65534,) * 3, "gid inside is 65534 (not 0)", g)
rep(0 not in os.getgroups(), "no supplementary group 0", os.getgroups())
rep(int(st["CapEff"], 16) == 0, "CapEff is 0", st["CapEff"])
rep(int(st["CapPrm"], 16) == 0 and int(st["CapAmb"], 16) == 0, "CapPrm and CapAmb are 0")
rep(st.get("NoNewPrivs") == "1", "NoNewPrivs is 1", st.get("NoNewPrivs"))
rep(st.get("Seccomp") == "2", "seccomp filter mode active", st.get("Seccomp"))

try:
    env1 = open("/proc/1/environ", "rb").read()
    rep(env1 == b"", "/proc/1/environ is empty", "%d bytes" % len(env1))
except OSError as e:
    rep(False, "/proc/1/environ is empty", e)
leak = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            if b"s3cr3t" in open("/proc/%s/environ" % p, "rb").read():
                leak.append(p)
        except OSError:
            pass
rep(not leak, "FAKE_SECRET not visible in any /proc/*/environ", leak)

extra = {}
for f in os.listdir("/proc/self/fd"):
    if int(f) > 2:
        try:
            extra[f] = os.readlink("/proc/self/fd/" + f)
        except FileNotFoundError:
            pass  # the directory fd os.listdir itself used
rep(not extra, "only fds 0,1,2 open inside (host fds 7/9 and the seccomp memfd gone)", extra)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
arch = platform.machine()
L = ctypes.c_long

def call(fn):
    ctypes.set_errno(0)
    res = fn()
    return res, ctypes.get_errno()

# Every call the filter denies, from the launcher'"'"'s own table (--print-denied-syscalls): the same table the
# Swift test SandboxIsolationTests.dangerousSyscallsAreDenied walks, so neither can drift from the filter.
import json
table = json.loads(DENIED_TABLE)
rep(len(table) > 40, "denied-syscall table read from the launcher", "%d calls" % len(table))
for d in table:
    args = [L(a) for a in d["args"]] + [L(0)] * (6 - len(d["args"]))
    res, e = call(lambda: libc.syscall(L(d["nr"]), *args))
    rep(res == -1 and e == d["errno"], "%s fails with errno %d" % (d["name"], d["errno"]),
        "ret=%s errno=%s" % (res, errno.errorcode.get(e, e)))
res, e = call(lambda: libc.personality(ctypes.c_uint(0xffffffff)))
rep(res >= 0, "personality(0xffffffff) query still allowed", "ret=%s errno=%s" % (res, e))
rfd, wfd = os.pipe()
try:
    fcntl.ioctl(rfd, 0x541B, b"\0\0\0\0")  # FIONREAD: ordinary ioctls still work
    rep(True, "ordinary ioctl (FIONREAD) still allowed")
except OSError as e:
    rep(False, "ordinary ioctl (FIONREAD) still allowed", e)

for rname, want in (("RLIMIT_NOFILE", (64, 64)), ("RLIMIT_CORE", (0, 0)),
                    ("RLIMIT_NPROC", (256, 256)), ("RLIMIT_AS", (1 << 30, 1 << 30))):
    got = resource.getrlimit(getattr(resource, rname))
    rep(got == want, "%s is %s inside" % (rname, want), got)

ign = int(st["SigIgn"], 16)
host_ignored = [signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM]
rep(all(not ign & (1 << (s - 1)) for s in host_ignored),
    "host-ignored SIGHUP/SIGUSR1/SIGTERM are back to default", st["SigIgn"])
rep(int(st["SigBlk"], 16) == 0, "no signals blocked", st["SigBlk"])

data = sys.stdin.read()
rep(data == "hello-from-host\n", "stdin is the host pipe", repr(data))
sys.stderr.write("stderr-marker\n")
print("END", flush=True)
'

DENIED_JSON=$("$L" --print-denied-syscalls | paste -sd, -)
PROBE="DENIED_TABLE = '[$DENIED_JSON]'
$PROBE"

# The host side leaves fds 7 and 9 open (no CLOEXEC), ignores some signals and
# holds a secret in its environment.
run_sandboxed() { # run_sandboxed <launcher-or-empty> <probe>
    (
        trap '' HUP USR1 TERM
        exec 7</etc/hostname
        exec 9<>"$WORK/host-fd9"
        if [ -n "$1" ]; then
            printf 'hello-from-host\n' |
                FAKE_SECRET=s3cr3t "$1" "${LOPTS[@]}" -- "${BW[@]}" "$PY" -I -c "$2"
        else
            printf 'hello-from-host\n' |
                FAKE_SECRET=s3cr3t "${BW[@]}" "$PY" -I -c "$2"
        fi
    )
}

run_sandboxed "$L" "$PROBE" >"$WORK/sb.out" 2>"$WORK/sb.err"
rc=$?
while IFS= read -r line; do
    case "$line" in
        "OK "*) pass "sandbox: ${line#OK }" ;;
        "BAD "*) fail "sandbox: ${line#BAD }" ;;
    esac
done <"$WORK/sb.out"
if [ "$rc" = 0 ] && grep -qx END "$WORK/sb.out"; then
    pass "sandbox probe ran to completion (exit 0)"
else
    fail "sandbox probe did not complete: exit $rc; stderr: $(head -c 600 "$WORK/sb.err")"
fi
if grep -qx stderr-marker "$WORK/sb.err"; then
    pass "stderr passed through to the host"
else
    fail "stderr not passed through: $(head -c 300 "$WORK/sb.err")"
fi

# Control: the same bwrap command WITHOUT the launcher, to show the checks above
# can detect the leaks they look for (informational only).
CONTROL='
import os
e = open("/proc/1/environ", "rb").read()
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
print("secret_visible=%s fd7_visible=%s" % (b"s3cr3t" in e, 7 in fds))'
ctl=$(run_sandboxed "" "$CONTROL" 2>&1)
case "$ctl" in
    *"secret_visible=True fd7_visible=True"*)
        pass "control (bwrap without launcher): secret and fd 7 DO leak, so the checks above are meaningful" ;;
    *) note "control run without launcher: $ctl" ;;
esac

# --------------------------------------------------------------------------
# 4. cgroup: membership, pids.max fork-bomb cap, setsid
# --------------------------------------------------------------------------
CGROOT=/sys/fs/cgroup/pids
if [ ! -d "$CGROOT" ]; then
    fail "cgroup v1 pids hierarchy $CGROOT not present"
else
    CG="$CGROOT/rlmtest-$$"
    if ! mkdir "$CG" || ! echo 20 >"$CG/pids.max"; then
        fail "could not create $CG with pids.max=20"
        CG=""
    fi
fi

if [ -n "$CG" ]; then
    FORKPROBE='
import os, signal, sys, time
print("READY", flush=True)
sys.stdin.readline()
kids, blocked, other = [], False, ""
for i in range(200):
    try:
        pid = os.fork()
    except BlockingIOError:
        blocked = True
        break
    except OSError as e:
        other = repr(e)
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print("FORKS %d BLOCKED %s %s" % (len(kids), blocked, other), flush=True)
for k in kids:
    os.kill(k, signal.SIGKILL)
for k in kids:
    os.waitpid(k, 0)
print("DONE", flush=True)
'
    coproc SB { exec "$L" "${LOPTS[@]}" --cgroup "$CG" -- "${BW[@]}" "$PY" -I -c "$FORKPROBE" 2>&1; }
    sb_pid=$SB_PID
    sb_in=${SB[1]}
    sb_out=${SB[0]}
    line=""
    read -r -t 30 -u "$sb_out" line
    if [ "$line" = READY ]; then
        procs=$(tr '\n' ' ' <"$CG/cgroup.procs")
        if grep -qx "$sb_pid" "$CG/cgroup.procs"; then
            pass "cgroup: launcher/bwrap pid $sb_pid is in $CG (cgroup.procs: $procs)"
        else
            fail "cgroup: pid $sb_pid not in $CG/cgroup.procs ($procs)"
        fi
        if [ "$(wc -l <"$CG/cgroup.procs")" -ge 2 ]; then
            pass "cgroup: sandbox children inherited the cgroup"
        else
            fail "cgroup: expected the sandbox processes in cgroup.procs, got: $procs"
        fi
        sid=$(sed 's/.*) //' "/proc/$sb_pid/stat" | awk '{print $4}')
        if [ "$sid" = "$sb_pid" ]; then
            pass "setsid: launcher is the leader of a new session (sid $sid)"
        else
            fail "setsid: launcher session id is $sid, expected $sb_pid"
        fi
        echo go >&"$sb_in"
        line=""
        read -r -t 60 -u "$sb_out" line
        set -- $line
        if [ "${1:-}" = FORKS ] && [ "${4:-}" = True ] && [ "${2:-99}" -lt 20 ]; then
            pass "cgroup: fork bomb capped by pids.max=20 (BlockingIOError after $2 forks)"
        else
            fail "cgroup: fork bomb not capped: [$line]"
        fi
        read -r -t 30 -u "$sb_out" line
    else
        fail "cgroup: sandbox did not start: [$line]"
    fi
    exec {sb_in}>&- 2>/dev/null
    kill -9 "$sb_pid" 2>/dev/null
    wait "$sb_pid" 2>/dev/null

    # ----------------------------------------------------------------------
    # 5. PR_SET_PDEATHSIG: kill the launcher's parent -> launcher/bwrap dies
    #    (bwrap WITHOUT --die-with-parent, so only the launcher's prctl acts)
    # ----------------------------------------------------------------------
    rm -f "$WORK/pid"
    (
        "$L" --uid "$SANDBOX_UID" --gid "$SANDBOX_GID" --cgroup "$CG" -- \
            "${BW_BASE[@]}" "$PY" -I -c 'import time; time.sleep(30)' </dev/null &
        echo $! >"$WORK/pid"
        wait
    ) &
    parent=$!
    for _ in $(seq 50); do [ -s "$WORK/pid" ] && break; sleep 0.1; done
    lpid=$(cat "$WORK/pid" 2>/dev/null)
    # wait until the launcher has exec'd bwrap
    for _ in $(seq 50); do
        [ "$(cat "/proc/$lpid/comm" 2>/dev/null)" = bwrap ] && break
        sleep 0.1
    done
    sleep 0.3
    kill -9 "$parent"
    wait "$parent" 2>/dev/null
    gone=no
    for _ in $(seq 50); do
        state=$(sed 's/.*) //' "/proc/$lpid/stat" 2>/dev/null | awk '{print $1}')
        if [ -z "$state" ] || [ "$state" = Z ]; then gone=yes; break; fi
        sleep 0.1
    done
    if [ -n "$lpid" ] && [ "$gone" = yes ]; then
        pass "PR_SET_PDEATHSIG: bwrap (pid $lpid) died with the launcher's parent"
    else
        fail "PR_SET_PDEATHSIG: pid ${lpid:-?} still alive (state $state) after its parent was killed"
    fi
fi

# --------------------------------------------------------------------------
# 6. Non-root caller: --uid/--gid ignored, sandbox still works
# --------------------------------------------------------------------------
if command -v setpriv >/dev/null 2>&1; then
    out=$(setpriv --reuid 65534 --regid 65534 --clear-groups \
        "$L" --uid 12345 --gid 12345 --seccomp --rlimit nofile=64 -- "${BW[@]}" \
        "$PY" -I -c 'import os; print(os.getuid(), os.getgid())' </dev/null 2>&1)
    if [ "$out" = "65534 65534" ]; then
        pass "non-root caller: --uid/--gid ignored, sandbox runs as the caller"
    else
        fail "non-root caller: got [$out]"
    fi
else
    note "setpriv not found; skipping the non-root caller check"
fi

echo
echo "launcher selftest: $passes passed, $fails failed"
[ "$fails" = 0 ]
