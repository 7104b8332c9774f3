/* isolate-agentd: the program of a Session's sandbox (pid 2, under isolate-init).
 *
 * It starts the session's processes on request and reports when they end, so that one
 * sandbox serves many commands. It talks to the caller over fd 0, a SOCK_SEQPACKET
 * socket; every message starts with a struct amsg:
 *
 *   caller -> agentd
 *     A_RUN     id flags a  | cwd\0 argv0\0...\0 \0 env0\0...   fds: stdin stdout stderr
 *               Starts a process in a session (and process group) of its own.
 *               flags & RUN_SHELL: its stdin is a pipe agentd keeps (the shell's input).
 *               reply R_STARTED id pid err (err = errno of the failed step, pid = step)
 *     A_SHELL   id slot -   | text                 fds: stdin stdout stderr script
 *               Holds the fds at HOLD_FD + 4*slot + 0..3 (the shell opens them through
 *               /proc/$PPID/fd/N) and writes text to the input of shell `id`.
 *     A_RELEASE -  slot -   closes the fds held in that slot
 *     A_KILL    id sig only kill(-pid, sig) (unless only) and kill(pid, sig)
 *   agentd -> caller
 *     R_HELLO   0 pid 0     once, at start (pid = agentd's pid in the sandbox)
 *     R_EXIT    id status 0 a process of ours ended (wait status)
 *     R_NET     pid family port | address (4 or 16 bytes)
 *               a process of the session called connect() to a non-loopback inet
 *               address (watched with a SECCOMP_RET_USER_NOTIF filter on connect that
 *               agentd installs on itself, so on every process it starts; agentd only
 *               looks: the kernel then does the call as it would have, CONTINUE).
 *     R_DENIED  pid nr ret  | u32 arch, u32 0, u64 args[6], char comm[16]
 *               (argv[2] "notify:FD:WATCH") the profile's filter refused a call of a
 *               process of the session: isolate-init loaded it with its errno returns
 *               turned into SECCOMP_RET_USER_NOTIF and left us its listener; FD holds that
 *               program. We run it on the call (bpf_run) to learn the profile's answer
 *               (ret: the original action and errno), report it, and answer the call with
 *               that errno. WATCH=1: the program starts with CONNECT_PREFIX instructions
 *               that send every connect() (isolate.kernel.seccomp_notify); the profile's
 *               answer is then the program's from there on, and an allowed connect() is
 *               watched as with "net".
 *
 * When the caller's end of the socket closes, agentd exits, and isolate-init then ends
 * every process of the sandbox.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#define A_RUN 1
#define A_SHELL 2
#define A_RELEASE 3
#define A_KILL 4
#define R_HELLO 16
#define R_STARTED 17
#define R_EXIT 18
#define R_NET 19
#define R_DENIED 20
#define CONNECT_PREFIX 5 /* isolate.kernel.seccomp_notify.CONNECT_PREFIX */
#define RUN_SHELL 1
#define HOLD_FD 10
#define MAX_MSG (1 << 20)
#define MAX_PROCS 4096

struct amsg {
    uint32_t kind;
    uint32_t id;
    int32_t a;
    int32_t b;
};

static struct {
    pid_t pid;
    uint32_t id;
    int shell_in; /* RUN_SHELL: our end of its input, else -1 */
} procs[MAX_PROCS];
static int nprocs;

static void reply(int kind, uint32_t id, int a, int b)
{
    struct amsg m = {(uint32_t)kind, id, a, b};
    while (send(0, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static void close_fds(int lo)
{
    if (syscall(436 /* close_range */, lo, ~0U, 0) == 0)
        return;
    for (int fd = lo; fd < 4096; fd++)
        close(fd);
}

static int find(uint32_t id)
{
    for (int i = 0; i < nprocs; i++)
        if (procs[i].id == id)
            return i;
    return -1;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* The child: fds to 0/1/2, its own session, cwd, exec (PATH from its environment).
 * A failure is reported on errpipe as (step, errno). */
static void child(int *fds, int nfds, int in_pipe, const char *cwd, char **argv, char **envp, int errpipe,
                  const sigset_t *oldmask)
{
    int step = 1;
    setsid();
    int src[3] = {-1, -1, -1};
    for (int i = 0; i < 3 && i < nfds; i++)
        src[i] = fds[i];
    if (in_pipe >= 0)
        src[0] = in_pipe;
    /* Move the sources out of the way of 0..2 first. */
    for (int i = 0; i < 3; i++)
        if (src[i] >= 0 && src[i] < 3) {
            int d = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
            if (d < 0)
                goto fail;
            src[i] = d;
        }
    step = 2;
    for (int i = 0; i < 3; i++)
        if (src[i] >= 0 && dup2(src[i], i) < 0)
            goto fail;
    step = 3;
    if (cwd[0] && chdir(cwd) < 0)
        goto fail;
    step = 4;
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    signal(SIGPIPE, SIG_DFL);
    {
        int keep = errpipe;
        if (keep != 3) {
            if (dup2(keep, 3) < 0)
                goto fail;
            keep = 3;
        }
        fcntl(3, F_SETFD, FD_CLOEXEC);
        close_fds(4);
        errpipe = 3;
    }
    step = 5;
    execvpe(argv[0], argv, envp);
fail : {
    int rec[2] = {step, errno};
    write_all(errpipe, (const char *)rec, sizeof rec);
    _exit(127);
}
}

static void do_run(struct amsg *m, char *data, size_t len, int *fds, int nfds, const sigset_t *oldmask)
{
    /* cwd\0 argv...\0 \0 env...\0 */
    char *argv[4096], *envp[4096];
    int na = 0, ne = 0, section = 0;
    char *cwd = data, *p = data, *end = data + len;
    p += strnlen(p, (size_t)(end - p)) + 1;
    while (p < end) {
        size_t n = strnlen(p, (size_t)(end - p));
        if (section == 0) {
            if (n == 0)
                section = 1;
            else if (na < 4095)
                argv[na++] = p;
        } else if (ne < 4095) {
            envp[ne++] = p;
        }
        p += n + 1;
    }
    argv[na] = NULL;
    envp[ne] = NULL;
    if (na == 0 || nprocs >= MAX_PROCS) {
        reply(R_STARTED, m->id, -1, na == 0 ? EINVAL : EAGAIN);
        return;
    }
    int shell_pipe[2] = {-1, -1};
    if ((m->a & RUN_SHELL) && pipe2(shell_pipe, O_CLOEXEC) < 0) {
        reply(R_STARTED, m->id, -1, errno);
        return;
    }
    if (shell_pipe[1] >= 0) {
        /* Above the slots, which A_SHELL and A_RELEASE close by number. */
        int w = fcntl(shell_pipe[1], F_DUPFD_CLOEXEC, HOLD_FD + 4 * 64);
        if (w >= 0) {
            close(shell_pipe[1]);
            shell_pipe[1] = w;
        }
    }
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0) {
        reply(R_STARTED, m->id, -1, errno);
        return;
    }
    /* vfork: the child only rearranges its fds, chdirs and execs (or writes errpipe and
     * _exits), touching no memory of ours but its own deeper stack frames; we wait for
     * that anyway (errpipe), and avoid copying our page tables. */
    pid_t pid = vfork();
    if (pid == 0)
        child(fds, nfds, shell_pipe[0], cwd, argv, envp, ep[1], oldmask);
    close(ep[1]);
    if (shell_pipe[0] >= 0)
        close(shell_pipe[0]);
    if (pid < 0) {
        int e = errno;
        close(ep[0]);
        if (shell_pipe[1] >= 0)
            close(shell_pipe[1]);
        reply(R_STARTED, m->id, -1, e);
        return;
    }
    int rec[2];
    ssize_t r;
    while ((r = read(ep[0], rec, sizeof rec)) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    procs[nprocs].pid = pid;
    procs[nprocs].id = m->id;
    procs[nprocs].shell_in = shell_pipe[1];
    nprocs++;
    if (r == (ssize_t)sizeof rec)
        reply(R_STARTED, m->id, -rec[0], rec[1]); /* it failed (and exits 127): -step, errno */
    else
        reply(R_STARTED, m->id, pid, 0);
}

/* A filter on top of the profile's: connect() is shown to us first. */
static int watch_connect(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_connect, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof *f, f};
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

/* The profile's filter (notify mode) and where its decisions start. */
static struct sock_filter *nprog;
static int nprog_len, nprog_start, watch_net;

/* Classic BPF as the kernel runs a seccomp filter: the program's return value for d. */
static uint32_t bpf_run(const struct sock_filter *f, int n, int pc, const struct seccomp_data *d)
{
    uint32_t a = 0, x = 0, mem[16] = {0};
    const unsigned char *data = (const unsigned char *)d;
    while (pc >= 0 && pc < n) {
        const struct sock_filter *i = &f[pc++];
        uint32_t k = i->k, src = (BPF_SRC(i->code) == BPF_X) ? x : k;
        switch (BPF_CLASS(i->code)) {
        case BPF_LD:
            switch (BPF_MODE(i->code)) {
            case BPF_ABS:
                if (k % 4 || k + 4 > sizeof *d)
                    return SECCOMP_RET_KILL_THREAD;
                memcpy(&a, data + k, 4);
                break;
            case BPF_IMM: a = k; break;
            case BPF_MEM: a = mem[k & 15]; break;
            case BPF_LEN: a = sizeof *d; break;
            default: return SECCOMP_RET_KILL_THREAD;
            }
            break;
        case BPF_LDX:
            x = BPF_MODE(i->code) == BPF_IMM ? k : BPF_MODE(i->code) == BPF_MEM ? mem[k & 15] : (uint32_t)sizeof *d;
            break;
        case BPF_ST: mem[k & 15] = a; break;
        case BPF_STX: mem[k & 15] = x; break;
        case BPF_ALU:
            switch (BPF_OP(i->code)) {
            case BPF_ADD: a += src; break;
            case BPF_SUB: a -= src; break;
            case BPF_MUL: a *= src; break;
            case BPF_DIV: if (!src) return SECCOMP_RET_KILL_THREAD; a /= src; break;
            case BPF_MOD: if (!src) return SECCOMP_RET_KILL_THREAD; a %= src; break;
            case BPF_OR: a |= src; break;
            case BPF_AND: a &= src; break;
            case BPF_XOR: a ^= src; break;
            case BPF_LSH: a <<= (src & 31); break;
            case BPF_RSH: a >>= (src & 31); break;
            case BPF_NEG: a = -a; break;
            }
            break;
        case BPF_JMP:
            if (BPF_OP(i->code) == BPF_JA) {
                pc += (int)k;
                break;
            }
            {
                int taken = BPF_OP(i->code) == BPF_JEQ   ? a == src
                            : BPF_OP(i->code) == BPF_JGT ? a > src
                            : BPF_OP(i->code) == BPF_JGE ? a >= src
                                                         : (a & src) != 0;
                pc += taken ? i->jt : i->jf;
            }
            break;
        case BPF_RET:
            return BPF_RVAL(i->code) == BPF_A ? a : k;
        case BPF_MISC:
            if (BPF_MISCOP(i->code) == BPF_TXA)
                a = x;
            else
                x = a;
            break;
        }
    }
    return SECCOMP_RET_KILL_THREAD;
}

/* The listener isolate-init left open for us (notify mode): "anon_inode:seccomp notify". */
static int find_listener(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return -1;
    int found = -1;
    struct dirent *e;
    while (found < 0 && (e = readdir(dir))) {
        char path[300], link[64];
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n > 0) {
            link[n] = 0;
            if (!strcmp(link, "anon_inode:seccomp notify"))
                found = atoi(e->d_name);
        }
    }
    closedir(dir);
    if (found < 0)
        return -1;
    int d = fcntl(found, F_DUPFD_CLOEXEC, HOLD_FD + 4 * 64);
    if (d >= 0)
        close(found);
    return d;
}

static int load_program(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) ||
        st.st_size > 4096 * (off_t)sizeof(struct sock_filter))
        return -1;
    nprog = malloc((size_t)st.st_size);
    if (!nprog || pread(fd, nprog, (size_t)st.st_size, 0) != st.st_size)
        return -1;
    nprog_len = (int)(st.st_size / sizeof(struct sock_filter));
    close(fd);
    return 0;
}

static void report_connect(int listener, const struct seccomp_notif *req)
{
    unsigned char sa[128];
    memset(sa, 0, sizeof sa);
    size_t len = req->data.args[2] < sizeof sa ? (size_t)req->data.args[2] : sizeof sa;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)req->pid);
    int mem = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = -1;
    if (mem >= 0) {
        got = pread(mem, sa, len, (off_t)req->data.args[1]);
        close(mem);
    }
    if (got >= (ssize_t)sizeof(sa_family_t) && ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) == 0) {
        sa_family_t fam;
        memcpy(&fam, sa, sizeof fam);
        char out[sizeof(struct amsg) + 16];
        struct amsg m = {R_NET, (uint32_t)req->pid, fam, 0};
        size_t n = 0;
        if (fam == AF_INET && got >= (ssize_t)sizeof(struct sockaddr_in)) {
            struct sockaddr_in in;
            memcpy(&in, sa, sizeof in);
            if ((ntohl(in.sin_addr.s_addr) >> 24) != 127) {
                m.b = ntohs(in.sin_port);
                memcpy(out + sizeof m, &in.sin_addr, 4);
                n = 4;
            }
        } else if (fam == AF_INET6 && got >= (ssize_t)sizeof(struct sockaddr_in6)) {
            struct sockaddr_in6 in6;
            memcpy(&in6, sa, sizeof in6);
            static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            int loop = IN6_IS_ADDR_LOOPBACK(&in6.sin6_addr) ||
                       (!memcmp(&in6.sin6_addr, v4mapped, 12) && in6.sin6_addr.s6_addr[12] == 127);
            if (!loop) {
                m.b = ntohs(in6.sin6_port);
                memcpy(out + sizeof m, &in6.sin6_addr, 16);
                n = 16;
            }
        }
        if (n) {
            memcpy(out, &m, sizeof m);
            while (send(0, out, sizeof m + n, MSG_NOSIGNAL) < 0 && errno == EINTR)
                ;
        }
    }
}

/* A call a filter sent us: in notify mode the profile's (its refusals; connect() with
 * WATCH), else our own watch filter's (connect(), which that filter alone does not decide:
 * nprog is NULL, the answer is "go on"). */
static void on_notify(int listener)
{
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    memset(&req, 0, sizeof req);
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0)
        return;
    memset(&resp, 0, sizeof resp);
    resp.id = req.id;
    uint32_t ret = nprog ? bpf_run(nprog, nprog_len, nprog_start, &req.data) : SECCOMP_RET_ALLOW;
    uint32_t action = ret & SECCOMP_RET_ACTION_FULL;
    if (action == SECCOMP_RET_ALLOW || action == SECCOMP_RET_LOG) {
        if (watch_net && req.data.nr == SYS_connect && req.data.arch == AUDIT_ARCH_X86_64)
            report_connect(listener, &req);
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
        return;
    }
    int err = EPERM;
    uint32_t orig = ret;
    if (action == SECCOMP_RET_USER_NOTIF) { /* a rewritten SECCOMP_RET_ERRNO | errno */
        err = (int)(ret & SECCOMP_RET_DATA);
        orig = SECCOMP_RET_ERRNO | (ret & SECCOMP_RET_DATA);
    }
    struct {
        struct amsg m;
        uint32_t arch, pad;
        uint64_t args[6];
        char comm[16];
    } out;
    memset(&out, 0, sizeof out);
    out.m.kind = R_DENIED;
    out.m.id = (uint32_t)req.pid;
    out.m.a = req.data.nr;
    out.m.b = (int32_t)orig;
    out.arch = req.data.arch;
    memcpy(out.args, req.data.args, sizeof out.args);
    char path[40];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)req.pid);
    int cfd = open(path, O_RDONLY | O_CLOEXEC);
    if (cfd >= 0) {
        ssize_t n = read(cfd, out.comm, sizeof out.comm - 1);
        if (n > 0 && out.comm[n - 1] == '\n')
            out.comm[n - 1] = 0;
        close(cfd);
    }
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) == 0) { /* pid and comm were still its */
        while (send(0, &out, sizeof out, MSG_NOSIGNAL) < 0 && errno == EINTR)
            ;
    }
    if (action != SECCOMP_RET_USER_NOTIF) /* kill, trap, trace: only a watched connect() gets here */
        kill((pid_t)req.pid, SIGKILL);
    resp.error = -err;
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < nprocs; i++) {
            if (procs[i].pid != pid)
                continue;
            reply(R_EXIT, procs[i].id, status, 0);
            if (procs[i].shell_in >= 0)
                close(procs[i].shell_in);
            procs[i] = procs[--nprocs];
            break;
        }
    }
}

/* The notify mode's first process (see main): answers the filter's notifications until
 * agentd (its child) or the caller is gone. */
static void notifier(int listener, pid_t agent)
{
    /* The two fds at 3 and 4, from numbers above both (neither may land on the other). */
    int pidfd = (int)syscall(SYS_pidfd_open, agent, 0);
    int hi_pidfd = pidfd < 0 ? -1 : fcntl(pidfd, F_DUPFD_CLOEXEC, 100);
    int hi_listener = fcntl(listener, F_DUPFD_CLOEXEC, 100);
    if (prctl(PR_SET_DUMPABLE, 0) < 0 || hi_pidfd < 0 || hi_listener < 0 || dup2(hi_listener, 3) < 0 ||
        dup2(hi_pidfd, 4) < 0) {
        kill(agent, SIGKILL);
        _exit(124);
    }
    close_fds(5); /* keeps 0 (to report on), 1, 2 (/dev/null or the caller's), 3, 4 */
    for (;;) {
        struct pollfd p[3] = {{3, POLLIN, 0}, {4, POLLIN, 0}, {0, 0, 0}};
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[0].revents & POLLIN)
            on_notify(3);
        else if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            break;
        if (p[1].revents || (p[2].revents & (POLLHUP | POLLERR)))
            break; /* agentd ended, or the caller closed the session */
    }
    kill(agent, SIGKILL);
    _exit(0);
}

int main(int argc, char **argv)
{
    /* argv[1]: the fd this program was executed from (closed here); argv[2] "net":
     * report connect() calls to non-loopback addresses. */
    if (argc > 1)
        close(atoi(argv[1]));
    int listener = -1;
    if (argc > 2 && !strcmp(argv[2], "net")) {
        listener = watch_connect();
        if (listener >= 0)
            fcntl(listener, F_SETFD, FD_CLOEXEC);
        watch_net = 1;
    } else if (argc > 2 && !strncmp(argv[2], "notify:", 7)) {
        char *end = NULL;
        int pfd = (int)strtol(argv[2] + 7, &end, 10);
        watch_net = end && *end == ':' && end[1] == '1';
        nprog_start = watch_net ? CONNECT_PREFIX : 0;
        if (load_program(pfd) < 0 || nprog_len <= nprog_start || (listener = find_listener()) < 0)
            return 124; /* the session reports that its sandbox did not start */
        /* The listener goes to a process of its own, which we become the child of: it is
         * never blocked by our waits (a vforked child's refused call waits for its answer
         * while we wait for that child), it is not dumpable (the session's processes, of
         * our uid, can neither ptrace it nor take its fds: answering the filter's
         * notifications themselves would lift the filter), and every process of the
         * session descends from it (reading a connect()'s address in /proc/PID/mem). */
        pid_t me = getpid(), agent = fork();
        if (agent < 0)
            return 124;
        if (agent > 0)
            notifier(listener, agent);
        close(listener);
        listener = -1;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != me)
            return 124; /* without the notifier, no session */
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask, oldmask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    sigdelset(&oldmask, SIGCHLD);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return 125;
    fcntl(0, F_SETFD, FD_CLOEXEC);
    /* Nothing else of ours may leak into the processes we start. */
    for (int fd = 1; fd < 3; fd++) {
        int n = open("/dev/null", O_RDWR);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
    char *buf = malloc(MAX_MSG + 1);
    if (!buf)
        return 125;
    reply(R_HELLO, 0, (int)getpid(), 0);
    for (;;) {
        struct pollfd p[3] = {{0, POLLIN, 0}, {sfd, POLLIN, 0}, {listener, POLLIN, 0}};
        if (poll(p, listener >= 0 ? 3 : 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 125;
        }
        if (p[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0)
                ;
            reap();
        }
        if (listener >= 0 && (p[2].revents & POLLIN))
            on_notify(listener);
        if (!p[0].revents)
            continue;
        char cbuf[CMSG_SPACE(sizeof(int) * 8)] __attribute__((aligned(8)));
        struct iovec iov = {buf, MAX_MSG};
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        ssize_t n = recvmsg(0, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0; /* the caller closed the session */
        int fds[8], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (int i = 0; i < k && nfds < 8; i++)
                    memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            }
        if ((size_t)n < sizeof(struct amsg)) {
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            continue;
        }
        struct amsg m;
        memcpy(&m, buf, sizeof m);
        char *data = buf + sizeof m;
        size_t len = (size_t)n - sizeof m;
        data[len] = 0;
        switch (m.kind) {
        case A_RUN:
            do_run(&m, data, len, fds, nfds, &oldmask);
            break;
        case A_SHELL: {
            /* Slot m.a: the fds are held at HOLD_FD + 4 * slot + 0..3. */
            int base = HOLD_FD + 4 * (m.a & 63);
            for (int i = 0; i < nfds; i++)
                if (fds[i] >= base && fds[i] < base + 4) {
                    int d = fcntl(fds[i], F_DUPFD_CLOEXEC, HOLD_FD + 4 * 64);
                    close(fds[i]);
                    fds[i] = d;
                }
            for (int i = 0; i < 4; i++)
                close(base + i);
            for (int i = 0; i < nfds && i < 4; i++)
                if (fds[i] >= 0)
                    dup3(fds[i], base + i, O_CLOEXEC);
            int k = find(m.id);
            if (k >= 0 && procs[k].shell_in >= 0)
                write_all(procs[k].shell_in, data, len);
            break;
        }
        case A_RELEASE: {
            int base = HOLD_FD + 4 * (m.a & 63);
            for (int i = 0; i < 4; i++)
                close(base + i);
            break;
        }
        case A_KILL: {
            int k = find(m.id);
            if (k >= 0) {
                if (!m.b) /* b = 1: the process only, not its process group */
                    kill(-procs[k].pid, m.a);
                kill(procs[k].pid, m.a);
            }
            break;
        }
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    }
}
