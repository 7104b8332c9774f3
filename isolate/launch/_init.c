/* isolate-init: the sandbox's pid 1 (or, without a pid namespace, a subreaper).
 *
 * The launch child execs this small static program before the real one, so that the
 * process which stays behind in the sandbox shares no memory with the caller (a
 * CLONE_VM helper kept as pid 1 would be reachable through ptrace or /proc/1/mem).
 *
 *   argv: isolate-init STATUS_FD PARENT_PIDFD BPF_FD FLAGS FIRST_PRIVATE CGROUP_FD NEXEC PATH... ARGV...
 *
 * With FLAG_CTTY (fds.pty) the program's process calls setsid and makes fd 0, a pty
 * the caller allocated for this sandbox, its controlling terminal (TIOCSCTTY).
 *
 * It starts the program (seccomp last, in the program's own process),
 * reports "started" or (step, errno) on STATUS_FD, then reaps every orphan, forwards
 * SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the program, and
 * when the program ends reports its wait status and exits, which takes down every
 * other process of the sandbox. If the caller process dies (PARENT_PIDFD becomes
 * readable) it kills the sandbox: unlike PR_SET_PDEATHSIG this follows the caller
 * process, not the thread that happened to start the sandbox.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "_protocol.h"

#define FLAG_PIDNS 1
#define FLAG_DIE_WITH_PARENT 2
#define FLAG_WARM 4 /* ready in advance: the task (argv, env, cwd, fds) arrives on fd 0 */
#define FLAG_CTTY 8 /* fd 0 is a fresh pty: the program makes it its controlling terminal */
#define FLAG_SECCOMP_LOG 16 /* load the filter with SECCOMP_FILTER_FLAG_LOG: denials go to the audit log */
#define FLAG_SECCOMP_EARLY 32 /* warm: the zygote loads the filter before its task (the caller checked that
                               * the filter allows every call the zygote makes after it: warm.py) */
#define FLAG_SECCOMP_NOTIFY 128 /* load the filter with SECCOMP_FILTER_FLAG_NEW_LISTENER and leave the
                                 * listener open across the exec: the program (isolate-agentd) answers
                                 * the calls its USER_NOTIF returns send (never loaded early) */
#define MSG_RUSAGE 5 /* just before MSG_EXITED, with a pid namespace: a = maxrss KiB, b.c = utime s.us, t = stime us */
#define TASK_MAGIC 0x544f5349u /* "ISOT" */
#define TASK_QUIET 1 /* a task's flags: pid 1 reports the start only with the end, and stays until killed */
#define TASK_MAX (1 << 20)
#define TASK_MAX_FDS 250

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* close_range(lo, hi) for a small range; close() each on a kernel without it (< 5.9). */
static void close_fds(int lo, int hi)
{
    if (hi < lo)
        return;
    if (syscall(SYS_close_range, lo, hi, 0) == 0 || errno != ENOSYS)
        return;
    for (int fd = lo; fd <= hi; fd++)
        close(fd);
}

static int status_fd = -1;
static int cgroup_fd = -1; /* cgroup.procs of the sandbox's cgroup (no pid namespace), or -1 */
static pid_t ctty_pgrp = 0; /* FLAG_CTTY: the program's own session and process group */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void send_msg(int fd, int kind, int a, int b, int c)
{
    struct isolate_msg m = {kind, a, b, c, now_ns()};
    while (write(fd, &m, sizeof m) < 0 && errno == EINTR)
        ;
}

static void fail(int step, int index, int err)
{
    send_msg(status_fd, MSG_ERROR, step, index, err);
    _exit(127);
}

/* The scheduling attributes of sched_setattr(2) (SCHED_ATTR_SIZE_VER0). */
struct sched_attr0 {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};
#define SHORT_SLICE_NS 100000ULL /* the shortest the kernel takes (0.1 ms) */

static int sched_get(struct sched_attr0 *a)
{
    memset(a, 0, sizeof *a);
    return (int)syscall(SYS_sched_getattr, 0, a, sizeof *a, 0);
}

static int sched_set(const struct sched_attr0 *a)
{
    struct sched_attr0 b = *a;
    b.size = sizeof b;
    b.flags &= 1; /* SCHED_FLAG_RESET_ON_FORK only */
    return (int)syscall(SYS_sched_setattr, 0, &b, 0);
}

/* Warm: this process's EEVDF slice made short (Linux 6.12+; otherwise nothing changes and
 * 0 is returned), its policy, nice value and flags as they were. *orig is what to give
 * the program back: the same attributes, with runtime 0 if the slice was the kernel's
 * default (sched_getattr reports a default slice as a number, like a custom one). */
static int short_slice(struct sched_attr0 *orig)
{
    struct sched_attr0 a, d;
    if (sched_get(orig) < 0 || (orig->policy != SCHED_OTHER && orig->policy != SCHED_BATCH))
        return 0;
    a = *orig;
    a.runtime = 0; /* the default slice: is that what we had? */
    if (sched_set(&a) < 0)
        return 0;
    if (sched_get(&d) < 0) {
        sched_set(orig);
        return 0;
    }
    if (d.runtime == orig->runtime)
        orig->runtime = 0;
    a = *orig;
    a.runtime = SHORT_SLICE_NS;
    if (sched_set(&a) < 0) {
        sched_set(orig);
        return 0;
    }
    return 1;
}

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

/* Without a pid namespace, the sandbox's cgroup is what holds the whole tree (a
 * daemon that called setsid has left our process group): kill every process in it
 * but us, until none is left (a process may fork while the first pass runs). */
static void kill_cgroup(void)
{
    static char buf[1 << 16];
    pid_t self = getpid();
    for (int pass = 0; pass < 100; pass++) {
        ssize_t n = pread(cgroup_fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            return;
        buf[n] = 0;
        int others = 0;
        for (char *p = buf; *p;) {
            pid_t pid = (pid_t)strtol(p, &p, 10);
            while (*p == '\n')
                p++;
            if (pid > 0 && pid != self) {
                kill(pid, SIGKILL);
                others++;
            }
        }
        if (!others)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Kill everything that is left of the sandbox. */
static void kill_all(int pidns, pid_t program)
{
    if (pidns && getpid() == 1)
        kill(-1, SIGKILL); /* as pid 1: every process in this namespace but us */
    else {
        if (program > 0)
            kill(program, SIGKILL);
        if (ctty_pgrp > 0)
            kill(-ctty_pgrp, SIGKILL); /* left our process group with its own terminal */
        if (cgroup_fd >= 0)
            kill_cgroup();
        kill(0, SIGKILL); /* our process group (setsid made it ours), us included */
    }
}

static uint32_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Moves fd to the lowest free number >= base, close-on-exec; closes the old one. */
static int move_up(int fd, int base)
{
    if (fd < 0)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, base);
    if (n < 0)
        fail(STEP_INIT, 20, errno);
    close(fd);
    return n;
}

/* The task's message and the pointers into it, allocated before the filter may be. */
static unsigned char *task_buf;
static char **task_ptrs;

static void alloc_task(void)
{
    task_buf = malloc(TASK_MAX);
    task_ptrs = calloc(2 * (size_t)TASK_MAX + 8, sizeof(char *)); /* untouched pages cost nothing */
}

/* One task from fd 0 (a unix SOCK_SEQPACKET socket), as one message:
 *   u32 magic, u32 nfds, i32 target[nfds], u32 nexec, u32 nargv, u32 nenv, i32 umask (-1: keep),
 *   u32 flags (TASK_QUIET), then NUL-terminated strings: cwd, exec paths, argv, environment;
 * with the nfds descriptors attached (SCM_RIGHTS), placed at target[i].
 *
 * Without TASK_QUIET the zygote asks pid 1 (one write on watch_fd, an eventfd) to watch
 * its start pipe and report "started" at the exec, as a cold launch does; with it,
 * pid 1 is not woken before the program ends. watch_fd is closed either way. */
static void receive_task(char ***paths, int *nexec, char ***prog_argv, int *first_private, int *parent_pidfd,
                         int *sfd, int watch_fd)
{
    unsigned char *buf = task_buf;
    char cbuf[CMSG_SPACE(sizeof(int) * TASK_MAX_FDS)];
    if (!buf)
        fail(STEP_INIT, 10, ENOMEM);
    struct pollfd pfd[2] = {{0, POLLIN, 0}, {*parent_pidfd, POLLIN, 0}};
    for (; *parent_pidfd >= 0;) { /* without the caller's pidfd (the zygote), recvmsg waits */
        if (poll(pfd, *parent_pidfd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail(STEP_INIT, 11, errno);
        }
        if (*parent_pidfd >= 0 && (pfd[1].revents & POLLIN))
            _exit(137); /* the caller is gone: nobody will ever send a task */
        if (pfd[0].revents)
            break;
    }
    struct iovec iov = {buf, TASK_MAX};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    ssize_t n = recvmsg(0, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0)
        _exit(n == 0 ? 0 : 127); /* the pool closed us without a task */
    int fds[TASK_MAX_FDS], nrecv = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds + nrecv, CMSG_DATA(c), sizeof(int) * (size_t)k);
            nrecv += k;
        }
    if (n < 8 || rd32(buf) != TASK_MAGIC || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        fail(STEP_INIT, 12, EPROTO);
    uint32_t nfds = rd32(buf + 4);
    size_t off = 8 + 4 * (size_t)nfds;
    if (nfds != (uint32_t)nrecv || off + 20 > (size_t)n)
        fail(STEP_INIT, 13, EPROTO);
    int targets[TASK_MAX_FDS];
    int top = 3;
    for (uint32_t i = 0; i < nfds; i++) {
        targets[i] = (int)rd32(buf + 8 + 4 * i);
        if (targets[i] < 0 || targets[i] > 65535)
            fail(STEP_INIT, 14, EBADF);
        if (targets[i] + 1 > top)
            top = targets[i] + 1;
    }
    uint32_t ne = rd32(buf + off), na = rd32(buf + off + 4), nv = rd32(buf + off + 8);
    int32_t task_umask = (int32_t)rd32(buf + off + 12); /* < 0: keep ours */
    uint32_t task_flags = rd32(buf + off + 16);
    off += 20;
    if (watch_fd >= 0) {
        if (!(task_flags & TASK_QUIET)) {
            uint64_t one = 1;
            while (write(watch_fd, &one, sizeof one) < 0 && errno == EINTR)
                ;
        }
        close(watch_fd);
    }
    size_t nstr = 1 + (size_t)ne + na + nv;
    /* Every string is at least its NUL: nstr <= n, and task_ptrs has room for the
     * strings and the NULL-terminated argv and envp (no allocation after the filter). */
    char **strs = task_ptrs;
    if (!strs || na < 1 || nstr > (size_t)n)
        fail(STEP_INIT, 15, strs ? EINVAL : ENOMEM);
    for (size_t i = 0; i < nstr; i++) {
        char *end = off < (size_t)n ? memchr(buf + off, 0, (size_t)n - off) : NULL;
        if (!end)
            fail(STEP_INIT, 16, EPROTO);
        strs[i] = (char *)buf + off;
        off = (size_t)((unsigned char *)end - buf) + 1;
    }
    /* Our own fds go above the program's table, then the table is laid out. Only those
     * below `top` need moving: every one of them is close-on-exec already (pipe2 and
     * MSG_CMSG_CLOEXEC), and none at or above `top` is touched by the layout. Each
     * received fd then ends up >= top, never equal to its target (dup2 of an fd onto
     * itself would keep its close-on-exec flag); its own number goes at the exec. */
#define MOVE_IF_LOW(fd) ((fd) >= 0 && (fd) < top ? move_up((fd), top) : (fd))
    status_fd = MOVE_IF_LOW(status_fd);
    cgroup_fd = MOVE_IF_LOW(cgroup_fd);
    *parent_pidfd = MOVE_IF_LOW(*parent_pidfd);
    *sfd = MOVE_IF_LOW(*sfd);
    for (uint32_t i = 0; i < nfds; i++)
        fds[i] = MOVE_IF_LOW(fds[i]);
#undef MOVE_IF_LOW
    /* Every number below top that is no target is closed; when the targets are exactly
     * 0..top-1 (the usual 0, 1, 2), each dup2 below replaces what was there. */
    int gaps = nfds != (uint32_t)top;
    for (uint32_t i = 0; i < nfds && !gaps; i++)
        for (uint32_t j = 0; j < i; j++)
            if (targets[j] == targets[i])
                gaps = 1;
    if (gaps)
        close_fds(0, top - 1);
    for (uint32_t i = 0; i < nfds; i++)
        if (dup2(fds[i], targets[i]) < 0)
            fail(STEP_FDS, targets[i], errno);
    if (strs[0][0] && chdir(strs[0]) < 0)
        fail(STEP_CHDIR, 0, errno);
    if (task_umask >= 0)
        umask((mode_t)task_umask & 0777); /* the program inherits it */
    /* argv and envp must be NULL-terminated arrays of their own. */
    char **exec_paths = strs + 1;
    char **argv_ = strs + nstr + 1;
    char **envp = argv_ + na + 1;
    memcpy(argv_, strs + 1 + ne, na * sizeof(char *));
    argv_[na] = NULL;
    memcpy(envp, strs + 1 + ne + na, nv * sizeof(char *));
    envp[nv] = NULL;
    environ = envp;
    *paths = exec_paths;
    *nexec = (int)ne;
    *prog_argv = argv_;
    *first_private = top;
}

/* The program's process has exec'd (its start pipe reads EOF: report MSG_STARTED with
 * its pid, or keep that record in *defer to be written with the end) or has failed
 * before (a record: relay it and end the sandbox). */
static void report_start(int *fd, pid_t program, int reaped, int64_t t_init, struct isolate_msg *defer)
{
    struct isolate_msg m;
    ssize_t n;
    do {
        n = read(*fd, &m, sizeof m);
    } while (n < 0 && errno == EINTR);
    close(*fd);
    *fd = -1;
    if (n == (ssize_t)sizeof m) {
        int st;
        if (!reaped)
            waitpid(program, &st, 0);
        send_msg(status_fd, MSG_ERROR, m.a, m.b, m.c);
        _exit(127);
    }
    struct isolate_msg s = {MSG_STARTED, program, 0, 0, t_init};
    if (defer) {
        *defer = s;
        return;
    }
    while (write(status_fd, &s, sizeof s) < 0 && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    if (argc < 8)
        return 127;
    status_fd = atoi(argv[1]);
    int parent_pidfd = atoi(argv[2]);
    int bpf_fd = atoi(argv[3]);
    int flags = atoi(argv[4]);
    int first_private = atoi(argv[5]);
    cgroup_fd = atoi(argv[6]);
    int nexec = atoi(argv[7]);
    if ((nexec < 1 && !(flags & FLAG_WARM)) || 8 + nexec > argc)
        return 127;
    char **paths = argv + 8;
    char **prog_argv = argv + 8 + nexec;
    int pidns = flags & FLAG_PIDNS;
    int is_init = pidns && getpid() == 1; /* pid 1 of the sandbox's pid namespace */
    int64_t t_init = now_ns();

    /* Not dumpable: the program (same uid, same user namespace) must not reach into
     * pid 1 through /proc/1/mem, ptrace, process_vm_* or /proc/1/fd, where the
     * status pipe and the caller's pidfd are. pid 1 runs without the seccomp filter;
     * taking it over would be an escape from the filter. The program's own exec makes
     * it dumpable again, which concerns only itself. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        fail(STEP_INIT, 7, errno);

    int private_fds[] = {status_fd, parent_pidfd, bpf_fd, cgroup_fd};
    for (unsigned i = 0; i < sizeof private_fds / sizeof *private_fds; i++)
        if (private_fds[i] >= 0)
            fcntl(private_fds[i], F_SETFD, FD_CLOEXEC);

    /* The caller may have died while the sandbox was being set up. */
    if (parent_pidfd >= 0) {
        struct pollfd p = {parent_pidfd, POLLIN, 0};
        if (poll(&p, 1, 0) > 0)
            fail(STEP_INIT, 1, ESRCH);
    }

    /* The seccomp program is loaded into the program's process, not ours: pid 1
     * must keep the calls it needs to reap and forward signals. */
    struct sock_fprog prog = {0, NULL};
    if (bpf_fd >= 0) {
        struct stat st;
        if (fstat(bpf_fd, &st) < 0)
            fail(STEP_SECCOMP, 1, errno);
        if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) || st.st_size > BPF_MAXINSNS * 8)
            fail(STEP_SECCOMP, 2, EINVAL);
        prog.filter = malloc((size_t)st.st_size);
        if (!prog.filter)
            fail(STEP_SECCOMP, 3, ENOMEM);
        if (pread(bpf_fd, prog.filter, (size_t)st.st_size, 0) != st.st_size)
            fail(STEP_SECCOMP, 4, errno ? errno : EIO);
        prog.len = (unsigned short)(st.st_size / sizeof(struct sock_filter));
        close(bpf_fd);
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    for (unsigned i = 0; i < sizeof forwarded / sizeof *forwarded; i++)
        sigaddset(&mask, forwarded[i]);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        fail(STEP_INIT, 2, errno);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        fail(STEP_INIT, 3, errno);
    if (!pidns && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        fail(STEP_INIT, 4, errno);

    int started[2];
    if (pipe2(started, O_CLOEXEC) < 0)
        fail(STEP_INIT, 5, errno);
    /* Warm: the zygote asks on this eventfd for the start to be watched (a task without
     * TASK_QUIET); until then pid 1 does not poll the start pipe. */
    int watch_fd = -1;
    if ((flags & FLAG_WARM) && (watch_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        fail(STEP_INIT, 8, errno);

    /* Warm: pid 1 and the zygote wait with the kernel's shortest EEVDF slice: the zygote
     * at its task's arrival and pid 1 at the program's end are then picked before the
     * other runnable tasks of a busy CPU (and may preempt one), instead of waiting behind
     * them. The zygote gives the program the caller's scheduling back before execve. */
    struct sched_attr0 orig_sched;
    int short_sliced = (flags & FLAG_WARM) ? short_slice(&orig_sched) : 0;

    /* The program's process. Warm (FLAG_WARM), it is forked now, before its task: the
     * zygote waits for the task itself, so that a task costs only the hand-over and
     * the exec. It keeps nothing of pid 1's: its errors go to pid 1 over the start
     * pipe, which relays them on the status pipe. */
    pid_t program = fork();
    if (program < 0)
        fail(STEP_INIT, 6, errno);
    if (program == 0) {
        close(started[0]);
        close(sfd);
        if (flags & FLAG_WARM) {
            if (parent_pidfd >= 0)
                close(parent_pidfd);
            if (cgroup_fd >= 0)
                close(cgroup_fd);
            close(status_fd);
            status_fd = started[1]; /* fail() now reports to pid 1 */
            parent_pidfd = cgroup_fd = -1;
            int no_sfd = -1;
            alloc_task();
            if ((flags & FLAG_SECCOMP_EARLY) && !(flags & (FLAG_CTTY | FLAG_SECCOMP_NOTIFY)) && prog.filter) {
                /* Loaded now, off the task's path: from here the zygote makes only calls the
                 * caller found the filter to allow (recvmsg, fcntl, dup2, close, close_range,
                 * chdir, umask, rt_sigprocmask, write, execve, exit_group). */
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                            (flags & FLAG_SECCOMP_LOG) ? SECCOMP_FILTER_FLAG_LOG : 0, &prog) < 0)
                    fail(STEP_SECCOMP, 0, errno);
                prog.filter = NULL; /* loaded: not again below */
            }
            receive_task(&paths, &nexec, &prog_argv, &first_private, &parent_pidfd, &no_sfd, watch_fd);
            started[1] = status_fd; /* moved above the program's table */
            /* The program runs with the caller's slice, never pid 1's (the early filter, if
             * loaded, allows this call: warm.py checked). */
            if (short_sliced && sched_set(&orig_sched) < 0)
                fail(STEP_INIT, 21, errno);
        }
        /* The program's table is 0..first_private-1 as laid out by the launch path (or
         * receive_task); nothing of ours above it may reach the program. Ours are
         * close-on-exec already: make sure of every other number too (5.11+). */
        syscall(SYS_close_range, first_private, ~0U, CLOSE_RANGE_CLOEXEC);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        struct isolate_msg m = {MSG_ERROR, 0, 0, 0, 0};
        long listener = -1; /* FLAG_SECCOMP_NOTIFY: the program finds it among its fds */
        /* A terminal of its own: a session of its own whose controlling terminal is
         * the fresh pty on fd 0. Before seccomp, which denies TIOCSCTTY. */
        if ((flags & FLAG_CTTY) && (setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0)) {
            m.a = STEP_SETSID;
            m.b = 1;
            m.c = errno;
        } else if (prog.filter && (listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                                      ((flags & FLAG_SECCOMP_LOG) ? SECCOMP_FILTER_FLAG_LOG : 0) |
                                                          ((flags & FLAG_SECCOMP_NOTIFY) ? SECCOMP_FILTER_FLAG_NEW_LISTENER
                                                                                         : 0),
                                                      &prog)) < 0) {
            m.a = STEP_SECCOMP;
            m.c = errno;
        } else if ((flags & FLAG_SECCOMP_NOTIFY) && prog.filter && fcntl((int)listener, F_SETFD, 0) < 0) {
            m.a = STEP_SECCOMP;
            m.b = 1;
            m.c = errno;
        } else {
            int err = ENOENT;
            for (int i = 0; i < nexec; i++) {
                execve(paths[i], prog_argv, environ);
                if (errno == EACCES)
                    err = errno;
                else if (errno != ENOENT && errno != ENOTDIR && errno != ENAMETOOLONG) {
                    err = errno;
                    break;
                }
            }
            m.a = STEP_EXEC;
            m.c = err;
        }
        while (write(started[1], &m, sizeof m) < 0 && errno == EINTR)
            ;
        _exit(127);
    }

    if (flags & FLAG_CTTY)
        ctty_pgrp = program;
    /* pid 1 keeps none of the program's fds: a pipe the program closes must reach
     * EOF at the caller without waiting for us. */
    close(started[1]);
    /* Our signalfd and the start pipe may sit in a gap of the program's table (pass_fds
     * [8] leaves 3..7 free): they stay (closing them made pid 1 spin on POLLNVAL). */
    if (first_private > 0) {
        int lo = 0;
        for (int fd = 0; fd < first_private; fd++)
            if (fd == sfd || fd == started[0] || fd == watch_fd) {
                close_fds(lo, fd - 1);
                lo = fd + 1;
            }
        close_fds(lo, first_private - 1);
    }
    free(prog.filter);

    if (flags & FLAG_WARM) {
        /* Set up, the program's process waiting for its task: ready. */
        struct isolate_msg ready = {MSG_STARTED, 0, 0, 0, t_init};
        while (write(status_fd, &ready, sizeof ready) < 0 && errno == EINTR)
            ;
    }

    /* The start pipe (until the program has exec'd: EOF, or why not), the signals, and
     * the caller's pidfd, in one loop: a warm sandbox waits here for its task too. Warm,
     * the start pipe is watched only once the zygote asks for it (watch_fd): a quiet
     * task's exec wakes nobody, its start is reported with its end. */
    int start_fd = started[0];
    int quiet = watch_fd >= 0;
    struct pollfd pfd[4] = {{sfd, POLLIN, 0}, {quiet ? -1 : start_fd, POLLIN, 0}, {parent_pidfd, POLLIN, 0},
                            {watch_fd, POLLIN, 0}};
    int program_status = 0, program_done = 0, no_children = 0;
    while (!program_done) {
        if (poll(pfd, 4, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[2].fd >= 0 && (pfd[2].revents & (POLLIN | POLLHUP | POLLERR))) {
            kill_all(pidns, program);
            _exit(137);
        }
        if (pfd[3].fd >= 0 && pfd[3].revents) {
            uint64_t v;
            if (read(watch_fd, &v, sizeof v) == (ssize_t)sizeof v || errno != EAGAIN) {
                quiet = 0; /* a task that wants its start reported at the exec */
                pfd[1].fd = start_fd;
                pfd[3].fd = -1;
            }
        }
        if (start_fd >= 0 && pfd[1].fd >= 0 && pfd[1].revents) {
            report_start(&start_fd, program, 0, t_init, NULL);
            pfd[1].fd = -1;
        }
        struct signalfd_siginfo si[8];
        ssize_t got;
        do { /* until a read returns fewer than it could take: the signalfd is drained */
            got = read(sfd, si, sizeof si);
            for (ssize_t k = 0; got > 0 && k < got / (ssize_t)sizeof *si; k++)
                if (si[k].ssi_signo != SIGCHLD)
                    kill(program, (int)si[k].ssi_signo);
        } while (got == (ssize_t)sizeof si);
        /* Reap every child that has ended: the program and any orphan. */
        for (;;) {
            int st;
            pid_t r = waitpid(-1, &st, WNOHANG);
            if (r <= 0) {
                no_children = r < 0 && errno == ECHILD;
                break;
            }
            if (r == program) {
                program_status = st;
                program_done = 1;
            }
        }
    }
    struct isolate_msg out[3];
    int nout = 0;
    if (start_fd >= 0) /* it ended before we read the start pipe (or the task was quiet) */
        report_start(&start_fd, program, 1, t_init, quiet ? &out[nout++] : NULL);
    if (is_init) {
        /* The program has ended: so does its sandbox. Every other process is killed
         * first (none runs another instruction after kill returns; with no child left
         * there is none: every process of the sandbox descends from us, and the
         * program's orphans were made ours before we could reap it), then what the
         * program used (it and every process reaped so far) and its status are
         * reported in one write: a warm task's caller can take its result from there
         * without waiting for the namespaces to be torn down. */
        if (!no_children)
            kill(-1, SIGKILL);
        struct rusage ru;
        memset(&ru, 0, sizeof ru);
        getrusage(RUSAGE_CHILDREN, &ru);
        out[nout++] = (struct isolate_msg){MSG_RUSAGE, (int32_t)ru.ru_maxrss, (int32_t)ru.ru_utime.tv_sec,
                                           (int32_t)ru.ru_utime.tv_usec,
                                           (int64_t)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec};
        out[nout++] = (struct isolate_msg){MSG_EXITED, program_status, 0, 0, now_ns()};
        while (write(status_fd, out, (size_t)nout * sizeof *out) < 0 && errno == EINTR)
            ;
        if (quiet) {
            /* A quiet task's caller has its result: the sandbox's teardown (our exit takes
             * the namespaces down) is left to the caller's pool, which kills us when it
             * cleans up, off the caller's path. We also go when the caller can no longer
             * read the report (the status pipe's reader closed: POLLERR) or is gone. Every
             * other process of the sandbox has been killed already. */
            struct pollfd lp[2] = {{status_fd, 0, 0}, {parent_pidfd, POLLIN, 0}};
            while (poll(lp, 2, -1) < 0 && errno == EINTR)
                ;
        }
        _exit(0);
    }
    /* Without a pid namespace, report first: the kill below takes our own process
     * group, us included. */
    send_msg(status_fd, MSG_EXITED, program_status, 0, 0);
    kill_all(pidns, 0);
    _exit(0);
}
