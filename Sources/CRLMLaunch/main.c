/*
 * rlm-sandbox-launch: prepare the process, then execve() bubblewrap.
 *
 * Usage: rlm-sandbox-launch [OPTIONS] -- /abs/path/to/bwrap [bwrap args...]
 *
 *   --uid N --gid N        if running as root, drop to this uid/gid (both
 *                          required together; 0 is refused). Ignored when not
 *                          root.
 *   --cgroup DIR           join DIR by writing our pid to DIR/cgroup.procs
 *                          (repeatable; done before the privilege drop).
 *   --rlimit NAME=VALUE    set soft+hard limit (repeatable). NAME is one of
 *                          as cpu nproc nofile fsize core stack memlock
 *                          msgqueue nice rtprio sigpending; VALUE is a
 *                          non-negative integer or "unlimited".
 *   --seccomp              pass a deny-list seccomp program to bwrap through
 *                          a memfd (`--seccomp FD` inserted after the path).
 *   --new-keyring          join a fresh anonymous session keyring.
 *   --data-fd              keep fds 3 and 4 open for the sandbox (the context
 *                          data pipes: 3 host -> sandbox, 4 sandbox -> host);
 *                          everything above them is still closed.
 *
 *   rlm-sandbox-launch --print-denied-syscalls
 *                          print every call the seccomp filter denies (one
 *                          JSON object a line: name, nr, args, errno) and
 *                          exit 0; for the tests that probe each of them.
 *
 * Always: setsid(); close every fd >= 3 (>= 5 with --data-fd); reset signal dispositions and the
 * signal mask; PR_SET_PDEATHSIG(SIGKILL) after the drop; PR_SET_NO_NEW_PRIVS;
 * execve() with an EMPTY environment.
 *
 * stdin/stdout/stderr are passed through untouched.
 *
 * Exit status: 2 usage error, 126 setup failure, 127 execve failure,
 * 1 if the parent died before the exec.
 *
 * Only glibc + Linux UAPI headers; builds on x86_64 and aarch64.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#if defined(__x86_64__)
#define RLM_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define RLM_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "rlm-sandbox-launch: unsupported architecture (only x86_64 and aarch64)"
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "rlm-sandbox-launch: big-endian targets are not supported"
#endif

#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#endif
#ifndef SECCOMP_RET_DATA
#define SECCOMP_RET_DATA 0x0000ffffU
#endif
#ifndef KEYCTL_JOIN_SESSION_KEYRING
#define KEYCTL_JOIN_SESSION_KEYRING 1
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#endif
#ifndef PR_CAP_AMBIENT_CLEAR_ALL
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef TIOCSTI
#define TIOCSTI 0x5412
#endif
#ifndef TIOCLINUX
#define TIOCLINUX 0x541C
#endif

#define PROG "rlm-sandbox-launch"

#define EXIT_USAGE 2
#define EXIT_SETUP 126
#define EXIT_EXEC 127

#define USAGE_HINT                                                            \
    "usage: " PROG " [--uid N --gid N] [--cgroup DIR]... "                    \
    "[--rlimit NAME=VALUE]... [--seccomp] [--new-keyring] "                   \
    "-- /abs/path/to/bwrap [args...]"

/* ------------------------------------------------------------------------ */
/* Error reporting: exactly one line on stderr, then _exit().               */

__attribute__((noreturn, format(printf, 1, 2)))
static void usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, PROG ": %s (" USAGE_HINT ")\n", msg);
    _exit(EXIT_USAGE);
}

/* "<what> failed: <strerror(err)>" */
__attribute__((noreturn, format(printf, 3, 4)))
static void fail_errno(int code, int err, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, PROG ": %s failed: %s\n", what, strerror(err));
    _exit(code);
}

/* Plain explanation. */
__attribute__((noreturn, format(printf, 2, 3)))
static void fail_msg(int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, PROG ": %s\n", msg);
    _exit(code);
}

/* ------------------------------------------------------------------------ */
/* Argument parsing.                                                         */

/* Strict non-negative decimal: digits only, no sign, no whitespace. */
static int parse_u64(const char *s, unsigned long long *out)
{
    const char *p;
    char *end = NULL;
    unsigned long long v;

    if (s == NULL || *s == '\0')
        return -1;
    for (p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static unsigned int parse_id(const char *opt, const char *s)
{
    unsigned long long v;
    if (parse_u64(s, &v) != 0 || v >= 0xFFFFFFFFULL)
        usage_error("invalid value for %s: '%s'", opt, s);
    if (v == 0)
        usage_error("refusing %s 0 as the sandbox identity", opt);
    return (unsigned int)v;
}

/* glibc declares setrlimit() with an enum parameter under _GNU_SOURCE. */
#ifdef __USE_GNU
typedef __rlimit_resource_t rlm_resource_t;
#else
typedef int rlm_resource_t;
#endif

static const struct {
    const char *name;
    rlm_resource_t resource;
} rlimit_names[] = {
    { "as", RLIMIT_AS },           { "cpu", RLIMIT_CPU },
    { "nproc", RLIMIT_NPROC },     { "nofile", RLIMIT_NOFILE },
    { "fsize", RLIMIT_FSIZE },     { "core", RLIMIT_CORE },
    { "stack", RLIMIT_STACK },     { "memlock", RLIMIT_MEMLOCK },
    { "msgqueue", RLIMIT_MSGQUEUE }, { "nice", RLIMIT_NICE },
    { "rtprio", RLIMIT_RTPRIO },   { "sigpending", RLIMIT_SIGPENDING },
};

struct rlimit_req {
    const char *spec;   /* original NAME=VALUE, for messages */
    rlm_resource_t resource;
    rlim_t value;
};

static void parse_rlimit(const char *spec, struct rlimit_req *out)
{
    const char *eq = strchr(spec, '=');
    const char *val;
    size_t name_len, i;
    int found = 0;

    if (eq == NULL)
        usage_error("invalid --rlimit '%s': expected NAME=VALUE", spec);
    name_len = (size_t)(eq - spec);
    val = eq + 1;

    for (i = 0; i < sizeof rlimit_names / sizeof rlimit_names[0]; i++) {
        if (strlen(rlimit_names[i].name) == name_len &&
            strncasecmp(rlimit_names[i].name, spec, name_len) == 0) {
            out->resource = rlimit_names[i].resource;
            found = 1;
            break;
        }
    }
    if (!found)
        usage_error("invalid --rlimit '%s': unknown resource name", spec);

    if (strcasecmp(val, "unlimited") == 0) {
        out->value = RLIM_INFINITY;
    } else {
        unsigned long long v;
        if (parse_u64(val, &v) != 0)
            usage_error("invalid --rlimit '%s': value must be a non-negative "
                        "integer or 'unlimited'", spec);
        out->value = (rlim_t)v;
    }
    out->spec = spec;
}

/* ------------------------------------------------------------------------ */
/* Process preparation steps.                                                */

/* Make sure 0, 1, 2 exist so nothing we open later lands on them. Open fds
 * are left completely untouched. */
static void ensure_stdio(void)
{
    int fd;
    for (fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
            int n = open("/dev/null", O_RDWR);
            if (n < 0)
                fail_errno(EXIT_SETUP, errno, "open(/dev/null)");
            if (n != fd) {
                if (dup2(n, fd) < 0)
                    fail_errno(EXIT_SETUP, errno, "dup2(/dev/null)");
                close(n);
            }
        }
    }
}

static void new_session(void)
{
    if (setsid() < 0 && errno != EPERM)
        fail_errno(EXIT_SETUP, errno, "setsid");
}

static int parse_fd_name(const char *s)
{
    long v = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > INT_MAX)
            return -1;
    }
    return (int)v;
}

/* Close every fd >= first (runc CVE-2024-21626 class of leaks). */
static void close_inherited_fds(int first)
{
    DIR *dir;

#ifdef __NR_close_range
    if (syscall(__NR_close_range, (unsigned)first, ~0U, 0U) == 0)
        return;
#endif

    dir = opendir("/proc/self/fd");
    if (dir != NULL) {
        int dfd = dirfd(dir);
        int *fds = NULL;
        size_t n = 0, cap = 0, i;
        struct dirent *ent;

        while ((ent = readdir(dir)) != NULL) {
            int fd = parse_fd_name(ent->d_name);
            if (fd < first || fd == dfd)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                int *nfds = realloc(fds, ncap * sizeof *fds);
                if (nfds == NULL)
                    fail_errno(EXIT_SETUP, ENOMEM, "closing inherited fds");
                fds = nfds;
                cap = ncap;
            }
            fds[n++] = fd;
        }
        closedir(dir);
        for (i = 0; i < n; i++)
            (void)close(fds[i]);
        free(fds);
        return;
    }

    {
        long max = sysconf(_SC_OPEN_MAX);
        long fd;
        if (max < 0 || max > INT_MAX)
            max = INT_MAX;
        for (fd = first; fd < max; fd++)
            (void)close((int)fd);
    }
}

static void reset_signals(void)
{
    struct sigaction sa;
    sigset_t empty;
    int sig;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        /* Fails with EINVAL for glibc-reserved RT signals; harmless. */
        (void)sigaction(sig, &sa, NULL);
    }
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) != 0)
        fail_errno(EXIT_SETUP, errno, "sigprocmask");
}

static void join_cgroup(const char *dir)
{
    char path[PATH_MAX];
    char buf[32];
    int fd, len, n;
    ssize_t w;

    n = snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    if (n < 0 || (size_t)n >= sizeof path)
        fail_errno(EXIT_SETUP, ENAMETOOLONG, "joining cgroup %s", dir);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        fail_errno(EXIT_SETUP, errno, "opening %s", path);
    len = snprintf(buf, sizeof buf, "%ld", (long)getpid());
    w = write(fd, buf, (size_t)len);
    if (w != (ssize_t)len) {
        int e = (w < 0) ? errno : EIO;
        close(fd);
        fail_errno(EXIT_SETUP, e, "writing pid to %s", path);
    }
    if (close(fd) != 0)
        fail_errno(EXIT_SETUP, errno, "writing pid to %s", path);
}

static void apply_rlimit(const struct rlimit_req *r)
{
    struct rlimit rl;
    rl.rlim_cur = r->value;
    rl.rlim_max = r->value;
    if (setrlimit(r->resource, &rl) != 0)
        fail_errno(EXIT_SETUP, errno, "setrlimit(%s)", r->spec);
}

static void new_keyring(void)
{
#ifdef __NR_keyctl
    if (syscall(__NR_keyctl, (long)KEYCTL_JOIN_SESSION_KEYRING, (long)0,
                0L, 0L, 0L) < 0 &&
        errno != ENOSYS)
        fail_errno(EXIT_SETUP, errno, "keyctl(KEYCTL_JOIN_SESSION_KEYRING)");
#endif
}

static void verify_no_caps(void)
{
    struct __user_cap_header_struct hdr;
    struct __user_cap_data_struct data[2];
    int i;

    memset(&hdr, 0, sizeof hdr);
    memset(data, 0, sizeof data);
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    hdr.pid = 0;
    if (syscall(SYS_capget, &hdr, data) != 0)
        fail_errno(EXIT_SETUP, errno, "capget");
    for (i = 0; i < 2; i++)
        if (data[i].effective != 0 || data[i].permitted != 0)
            fail_msg(EXIT_SETUP, "privilege drop verification failed: "
                                 "capabilities still present");
}

static void drop_privileges(uid_t uid, gid_t gid)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (setgroups(0, NULL) != 0)
        fail_errno(EXIT_SETUP, errno, "setgroups(0)");
    if (setresgid(gid, gid, gid) != 0)
        fail_errno(EXIT_SETUP, errno, "setresgid(%u)", (unsigned)gid);
    if (setresuid(uid, uid, uid) != 0)
        fail_errno(EXIT_SETUP, errno, "setresuid(%u)", (unsigned)uid);

    /* Verify. */
    if (getresuid(&ru, &eu, &su) != 0)
        fail_errno(EXIT_SETUP, errno, "getresuid");
    if (getresgid(&rg, &eg, &sg) != 0)
        fail_errno(EXIT_SETUP, errno, "getresgid");
    if (ru != uid || eu != uid || su != uid || getuid() != uid ||
        geteuid() != uid)
        fail_msg(EXIT_SETUP, "privilege drop verification failed: uid is "
                             "%u/%u/%u, expected %u",
                 (unsigned)ru, (unsigned)eu, (unsigned)su, (unsigned)uid);
    if (rg != gid || eg != gid || sg != gid || getgid() != gid ||
        getegid() != gid)
        fail_msg(EXIT_SETUP, "privilege drop verification failed: gid is "
                             "%u/%u/%u, expected %u",
                 (unsigned)rg, (unsigned)eg, (unsigned)sg, (unsigned)gid);
    if (getgroups(0, NULL) != 0)
        fail_msg(EXIT_SETUP, "privilege drop verification failed: "
                             "supplementary groups remain");
    if (setuid(0) != -1)
        fail_msg(EXIT_SETUP, "privilege drop verification failed: "
                             "setuid(0) succeeded");
    if (setgid(0) != -1)
        fail_msg(EXIT_SETUP, "privilege drop verification failed: "
                             "setgid(0) succeeded");
    verify_no_caps();
}

/* ------------------------------------------------------------------------ */
/* Seccomp program.                                                          */

/* The syscalls the filter denies with SC_DENY, by name: `--print-denied-syscalls` prints this very table (and
 * the argument-filtered calls below), so tests probe exactly what the filter holds. */
struct denied_syscall {
    const char *name;
    long nr;
};

static const struct denied_syscall denied_syscalls[] = {
#ifdef __NR_keyctl
    { "keyctl", __NR_keyctl },
#endif
#ifdef __NR_add_key
    { "add_key", __NR_add_key },
#endif
#ifdef __NR_request_key
    { "request_key", __NR_request_key },
#endif
#ifdef __NR_ptrace
    { "ptrace", __NR_ptrace },
#endif
#ifdef __NR_bpf
    { "bpf", __NR_bpf },
#endif
#ifdef __NR_perf_event_open
    { "perf_event_open", __NR_perf_event_open },
#endif
#ifdef __NR_userfaultfd
    { "userfaultfd", __NR_userfaultfd },
#endif
#ifdef __NR_kexec_load
    { "kexec_load", __NR_kexec_load },
#endif
#ifdef __NR_kexec_file_load
    { "kexec_file_load", __NR_kexec_file_load },
#endif
#ifdef __NR_init_module
    { "init_module", __NR_init_module },
#endif
#ifdef __NR_finit_module
    { "finit_module", __NR_finit_module },
#endif
#ifdef __NR_delete_module
    { "delete_module", __NR_delete_module },
#endif
#ifdef __NR_mount
    { "mount", __NR_mount },
#endif
#ifdef __NR_umount2
    { "umount2", __NR_umount2 },
#endif
#ifdef __NR_pivot_root
    { "pivot_root", __NR_pivot_root },
#endif
#ifdef __NR_swapon
    { "swapon", __NR_swapon },
#endif
#ifdef __NR_swapoff
    { "swapoff", __NR_swapoff },
#endif
#ifdef __NR_reboot
    { "reboot", __NR_reboot },
#endif
#ifdef __NR_open_by_handle_at
    { "open_by_handle_at", __NR_open_by_handle_at },
#endif
#ifdef __NR_name_to_handle_at
    { "name_to_handle_at", __NR_name_to_handle_at },
#endif
#ifdef __NR_setns
    { "setns", __NR_setns },
#endif
#ifdef __NR_unshare
    { "unshare", __NR_unshare },
#endif
#ifdef __NR_process_vm_readv
    { "process_vm_readv", __NR_process_vm_readv },
#endif
#ifdef __NR_process_vm_writev
    { "process_vm_writev", __NR_process_vm_writev },
#endif
#ifdef __NR_io_uring_setup
    { "io_uring_setup", __NR_io_uring_setup },
#endif
#ifdef __NR_io_uring_enter
    { "io_uring_enter", __NR_io_uring_enter },
#endif
#ifdef __NR_io_uring_register
    { "io_uring_register", __NR_io_uring_register },
#endif
#ifdef __NR_acct
    { "acct", __NR_acct },
#endif
#ifdef __NR_quotactl
    { "quotactl", __NR_quotactl },
#endif
#ifdef __NR_syslog
    { "syslog", __NR_syslog },
#endif
#ifdef __NR_settimeofday
    { "settimeofday", __NR_settimeofday },
#endif
#ifdef __NR_clock_settime
    { "clock_settime", __NR_clock_settime },
#endif
#ifdef __NR_clock_adjtime
    { "clock_adjtime", __NR_clock_adjtime },
#endif
#ifdef __NR_adjtimex
    { "adjtimex", __NR_adjtimex },
#endif
#ifdef __NR_lookup_dcookie
    { "lookup_dcookie", __NR_lookup_dcookie },
#endif
#ifdef __NR_move_pages
    { "move_pages", __NR_move_pages },
#endif
#ifdef __NR_mbind
    { "mbind", __NR_mbind },
#endif
#ifdef __NR_migrate_pages
    { "migrate_pages", __NR_migrate_pages },
#endif
#ifdef __NR_vhangup
    { "vhangup", __NR_vhangup },
#endif
#ifdef __NR_fsopen
    { "fsopen", __NR_fsopen },
#endif
#ifdef __NR_fsmount
    { "fsmount", __NR_fsmount },
#endif
#ifdef __NR_fspick
    { "fspick", __NR_fspick },
#endif
#ifdef __NR_open_tree
    { "open_tree", __NR_open_tree },
#endif
#ifdef __NR_move_mount
    { "move_mount", __NR_move_mount },
#endif
#ifdef __NR_mount_setattr
    { "mount_setattr", __NR_mount_setattr },
#endif
    { NULL, -1 } /* sentinel, keeps the array non-empty on every arch */
};

#define FILTER_MAX 256

struct filter {
    struct sock_filter insns[FILTER_MAX];
    unsigned int len;
};

static void emit(struct filter *f, struct sock_filter insn)
{
    if (f->len >= FILTER_MAX)
        fail_msg(EXIT_SETUP, "building seccomp filter failed: too long");
    f->insns[f->len++] = insn;
}

/* BPF_STMT/BPF_JUMP are brace initializers; wrap them as compound literals. */
#define SC_STMT(code, k) ((struct sock_filter)BPF_STMT((code), (k)))
#define SC_JUMP(code, k, jt, jf) \
    ((struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))
#define SC_RET(v) SC_STMT(BPF_RET | BPF_K, (v))
#define SC_LD(off) SC_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define SC_JEQ(k, jt, jf) SC_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (k), (jt), (jf))
#define SC_DENY (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

/* Offset of the low 32 bits of args[i] (little-endian only, see #error). */
#define SC_ARG_LO(i) \
    ((unsigned int)(offsetof(struct seccomp_data, args) + 8u * (i)))

static void build_filter(struct filter *f)
{
    size_t i;

    f->len = 0;

    /* Architecture check: anything else (e.g. i386 / compat) is killed. */
    emit(f, SC_LD((unsigned int)offsetof(struct seccomp_data, arch)));
    emit(f, SC_JEQ(RLM_AUDIT_ARCH, 1, 0));
    emit(f, SC_RET(SECCOMP_RET_KILL_PROCESS));

    emit(f, SC_LD((unsigned int)offsetof(struct seccomp_data, nr)));

#if defined(__x86_64__)
    /* x32 ABI: syscall numbers with bit 30 set. */
    emit(f, SC_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x40000000U, 0, 1));
    emit(f, SC_RET(SC_DENY));
#endif

    for (i = 0; i < sizeof denied_syscalls / sizeof denied_syscalls[0]; i++) {
        if (denied_syscalls[i].nr < 0)
            continue;
        emit(f, SC_JEQ((unsigned int)denied_syscalls[i].nr, 0, 1));
        emit(f, SC_RET(SC_DENY));
    }

#ifdef __NR_personality
    /* personality(2): only queries (0xffffffff) and PER_LINUX (0). */
    emit(f, SC_JEQ((unsigned int)__NR_personality, 0, 5));
    emit(f, SC_LD(SC_ARG_LO(0)));
    emit(f, SC_JEQ(0x00000000U, 2, 0));
    emit(f, SC_JEQ(0xffffffffU, 1, 0));
    emit(f, SC_RET(SC_DENY));
    emit(f, SC_RET(SECCOMP_RET_ALLOW));
#endif

#ifdef __NR_ioctl
    /* ioctl(2): deny TIOCSTI / TIOCLINUX (request is an unsigned int). */
    emit(f, SC_JEQ((unsigned int)__NR_ioctl, 0, 5));
    emit(f, SC_LD(SC_ARG_LO(1)));
    emit(f, SC_JEQ((unsigned int)TIOCSTI, 2, 0));
    emit(f, SC_JEQ((unsigned int)TIOCLINUX, 1, 0));
    emit(f, SC_RET(SECCOMP_RET_ALLOW));
    emit(f, SC_RET(SC_DENY));
#endif

    emit(f, SC_RET(SECCOMP_RET_ALLOW));
}

/* `--print-denied-syscalls`: one JSON object per line for every call the filter denies, from the tables and rules
 * build_filter() uses: {"name", "nr", "args" (one denied argument list for the argument-filtered calls, else []),
 * "errno" (what the filter returns)}. Tests (Tests/RLMSandboxTests, scripts/launcher_selftest.sh) probe each one
 * inside a real sandbox, so the filter and the tests cannot drift apart. Prints; changes nothing. */
static void print_denied_syscalls(void)
{
    const int err = (int)(SC_DENY & SECCOMP_RET_DATA);
    size_t i;

    for (i = 0; i < sizeof denied_syscalls / sizeof denied_syscalls[0]; i++) {
        if (denied_syscalls[i].nr < 0)
            continue;
        printf("{\"name\":\"%s\",\"nr\":%ld,\"args\":[],\"errno\":%d}\n",
               denied_syscalls[i].name, denied_syscalls[i].nr, err);
    }
#ifdef __NR_personality
    /* Anything but PER_LINUX (0) and the query (0xffffffff): ADDR_NO_RANDOMIZE, say. */
    printf("{\"name\":\"personality(ADDR_NO_RANDOMIZE)\",\"nr\":%ld,\"args\":[%u],\"errno\":%d}\n",
           (long)__NR_personality, 0x0040000U, err);
#endif
#ifdef __NR_ioctl
    printf("{\"name\":\"ioctl(TIOCSTI)\",\"nr\":%ld,\"args\":[0,%u,0],\"errno\":%d}\n",
           (long)__NR_ioctl, (unsigned int)TIOCSTI, err);
    printf("{\"name\":\"ioctl(TIOCLINUX)\",\"nr\":%ld,\"args\":[0,%u,0],\"errno\":%d}\n",
           (long)__NR_ioctl, (unsigned int)TIOCLINUX, err);
#endif
#if defined(__x86_64__)
    /* The whole x32 ABI (bit 30 set): getpid through it, for one. */
    printf("{\"name\":\"x32 getpid\",\"nr\":%ld,\"args\":[],\"errno\":%d}\n",
           (long)(0x40000000L | __NR_getpid), err);
#endif
    fflush(stdout);
}

/* Returns an fd (no CLOEXEC) holding the raw sock_filter array at offset 0. */
static int make_seccomp_fd(void)
{
    static struct filter f;
    const char *p;
    size_t left;
    int fd;

    build_filter(&f);

    fd = memfd_create("rlm-seccomp", MFD_ALLOW_SEALING);
    if (fd < 0)
        fail_errno(EXIT_SETUP, errno, "memfd_create");

    p = (const char *)f.insns;
    left = (size_t)f.len * sizeof f.insns[0];
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fail_errno(EXIT_SETUP, errno, "writing seccomp program");
        }
        if (w == 0)
            fail_errno(EXIT_SETUP, EIO, "writing seccomp program");
        p += w;
        left -= (size_t)w;
    }
    if (lseek(fd, 0, SEEK_SET) != 0)
        fail_errno(EXIT_SETUP, errno, "lseek(seccomp memfd)");
    if (fcntl(fd, F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        fail_errno(EXIT_SETUP, errno, "sealing seccomp memfd");
    return fd;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    static char *const empty_env[] = { NULL };
    const pid_t orig_ppid = getppid();

    int have_uid = 0, have_gid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    int want_seccomp = 0, want_keyring = 0, keep_data_fd = 0;
    const char **cgroups;
    size_t n_cgroups = 0;
    struct rlimit_req *rlimits;
    size_t n_rlimits = 0;
    int sep = -1;
    int i;
    const char *bwrap;
    char **exec_argv;
    size_t n_after, k;
    static char seccomp_fd_str[16];

    ensure_stdio();

    if (argc == 2 && strcmp(argv[1], "--print-denied-syscalls") == 0) {
        print_denied_syscalls();
        return 0;
    }

    /* ---- 1. parse ---- */
    cgroups = calloc((size_t)(argc > 0 ? argc : 1), sizeof *cgroups);
    rlimits = calloc((size_t)(argc > 0 ? argc : 1), sizeof *rlimits);
    if (cgroups == NULL || rlimits == NULL)
        fail_errno(EXIT_SETUP, ENOMEM, "allocating argument tables");

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            sep = i;
            break;
        } else if (strcmp(a, "--uid") == 0) {
            if (i + 1 >= argc)
                usage_error("--uid requires a value");
            uid = (uid_t)parse_id("--uid", argv[++i]);
            have_uid = 1;
        } else if (strcmp(a, "--gid") == 0) {
            if (i + 1 >= argc)
                usage_error("--gid requires a value");
            gid = (gid_t)parse_id("--gid", argv[++i]);
            have_gid = 1;
        } else if (strcmp(a, "--cgroup") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0')
                usage_error("--cgroup requires a directory");
            cgroups[n_cgroups++] = argv[++i];
        } else if (strcmp(a, "--rlimit") == 0) {
            if (i + 1 >= argc)
                usage_error("--rlimit requires NAME=VALUE");
            parse_rlimit(argv[++i], &rlimits[n_rlimits++]);
        } else if (strcmp(a, "--seccomp") == 0) {
            want_seccomp = 1;
        } else if (strcmp(a, "--new-keyring") == 0) {
            want_keyring = 1;
        } else if (strcmp(a, "--data-fd") == 0) {
            keep_data_fd = 1;
        } else if (a[0] != '-') {
            usage_error("missing '--' before the bwrap command (got '%s')", a);
        } else {
            usage_error("unknown option '%s'", a);
        }
    }
    if (sep < 0)
        usage_error("missing '--' before the bwrap command");
    if (sep + 1 >= argc)
        usage_error("missing bwrap path after '--'");
    bwrap = argv[sep + 1];
    if (bwrap[0] != '/')
        usage_error("bwrap path must be absolute, got '%s'", bwrap);
    if (have_uid != have_gid)
        usage_error("--uid and --gid must be given together");

    /* ---- 2. new session (EPERM: already a process-group leader) ---- */
    new_session();

    /* ---- 3. close everything inherited except stdio (and the data pipe) ---- */
    if (keep_data_fd) {
        int fd;
        for (fd = 3; fd <= 4; fd++) {
            struct stat data;
            if (fstat(fd, &data) != 0 || !S_ISFIFO(data.st_mode))
                usage_error("--data-fd: fd %d is not a pipe", fd);
            /* The sandbox uses it: it must survive the exec into bwrap and bwrap's into Python. */
            if (fcntl(fd, F_SETFD, 0) != 0)
                fail_errno(EXIT_SETUP, errno, "fcntl(%d, F_SETFD)", fd);
        }
    }
    close_inherited_fds(keep_data_fd ? 5 : 3);

    /* ---- 4. default signal dispositions, empty mask ---- */
    reset_signals();

    /* ---- 5. cgroups (needs privileges) ---- */
    for (k = 0; k < n_cgroups; k++)
        join_cgroup(cgroups[k]);

    /* ---- 6. rlimits (before the drop, so root may raise hard limits) ---- */
    for (k = 0; k < n_rlimits; k++)
        apply_rlimit(&rlimits[k]);

    /* ---- 7. keyring ---- */
    if (want_keyring)
        new_keyring();

    /* ---- 7b. below the host in the scheduler: model-written code never starves the process that serves it
     * (a server's health checks and event loops keep their CPU while a burst of sandboxes starts). Lowering the
     * priority needs no privilege, and RLIMIT_NICE (when set) keeps the sandbox from raising it back. ---- */
    errno = 0;
    if (setpriority(PRIO_PROCESS, 0, 10) != 0 && errno != 0)
        fail_errno(EXIT_SETUP, errno, "setpriority(10)");

    /* ---- 8. privilege drop (only when root) ---- */
    if (have_uid && geteuid() == 0)
        drop_privileges(uid, gid);
    /* Never let ambient capabilities survive into the sandbox. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0L, 0L, 0L) != 0 &&
        errno != EINVAL)
        fail_errno(EXIT_SETUP, errno, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");

    /* ---- 9. die with the parent (after the drop: setresuid clears it) ---- */
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)SIGKILL, 0L, 0L, 0L) != 0)
        fail_errno(EXIT_SETUP, errno, "prctl(PR_SET_PDEATHSIG)");
    if (getppid() != orig_ppid)
        fail_msg(1, "parent process exited before the sandbox started");

    /* ---- 10. no new privileges ---- */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) != 0)
        fail_errno(EXIT_SETUP, errno, "prctl(PR_SET_NO_NEW_PRIVS)");

    /* ---- 11. argv for bwrap, with `--seccomp FD` after the path ---- */
    n_after = (size_t)(argc - sep - 2); /* args after the bwrap path */
    exec_argv = calloc(n_after + 4, sizeof *exec_argv);
    if (exec_argv == NULL)
        fail_errno(EXIT_SETUP, ENOMEM, "allocating argv");
    k = 0;
    exec_argv[k++] = argv[sep + 1];
    if (want_seccomp) {
        int fd = make_seccomp_fd();
        snprintf(seccomp_fd_str, sizeof seccomp_fd_str, "%d", fd);
        exec_argv[k++] = (char *)"--seccomp";
        exec_argv[k++] = seccomp_fd_str;
    }
    for (i = sep + 2; i < argc; i++)
        exec_argv[k++] = argv[i];
    exec_argv[k] = NULL;

    /* ---- 12. exec with an EMPTY environment ---- */
    execve(bwrap, exec_argv, empty_env);
    fail_errno(EXIT_EXEC, errno, "execve(%s)", bwrap);
}
