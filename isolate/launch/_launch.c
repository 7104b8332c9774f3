/* isolate.launch._launch: the launch path, and nothing else.
 *
 * make_plan(...) turns a compiled profile into a C struct once (a capsule).
 * spawn(plan, ...) starts one sandbox from it:
 *
 *   parent                                    child (shares the parent's memory)
 *   ------                                    -----
 *   block all signals
 *   clone3(CLONE_VM|CLONE_PIDFD|ns flags)  -> reset signal handlers
 *   restore signal mask                       wait for id maps
 *   write uid_map / gid_map, release child    then the steps of child_main(), in order
 *   read the status pipe until EOF/message    execve (program, or the sandbox's pid 1)
 *
 * The child runs only raw system calls (see _syscall.h): no malloc, no locks, no
 * errno, no Python. Everything it needs was prepared by the parent before the clone.
 * It never keeps running in the caller's address space: it either execs or exits.
 * A step that fails sends (step, index, errno) to the parent, which raises.
 */
#ifndef ISOLATE_NO_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first: it defines _GNU_SOURCE */
#else /* the native `isolate` command (_cli.c) includes this file without Python */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "_protocol.h"
#include "_syscall.h"

#ifndef ISOLATE_BUILD_ID
#define ISOLATE_BUILD_ID "dev"
#endif

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

#define CHILD_STACK_SIZE (256 * 1024)
#define MAX_RLIMITS 16
#define MAX_TIMINGS 32

/* ---- mount operations (compiled by isolate/fs.py) ------------------------------ */
enum mount_op_kind {
    OP_MOUNT = 1,    /* mount(a, b, c, flags, d) */
    OP_MKDIR = 2,    /* mkdir(b, num) ; EEXIST is fine */
    OP_SYMLINK = 3,  /* symlink(a, b) */
    OP_WRITE = 4,    /* create b with mode num, write d */
    OP_BIND = 5,     /* bind a onto b (created to match a's type); flags: BIND_* */
    OP_PIVOT = 6,    /* a: pivot_root(b, b/a); else pivot_root(b, b) and detach the old root */
    OP_REMOUNT = 7,  /* mount(NULL, b, NULL, MS_REMOUNT|MS_BIND|flags, NULL) */
    OP_CHMOD = 8,    /* chmod(b, num) */
    OP_UMOUNT = 9,   /* umount2(b, MNT_DETACH) */
};
#define BIND_READONLY 1
#define BIND_OPTIONAL 2
#define BIND_DEV 4
#define BIND_NOEXEC 8
/* The bind keeps the flags of its source mount (a bind copies them): no mount_setattr.
 * For binds whose source already has exactly the flags asked for (a mask of a /proc
 * entry bound from the view's own read-only /dev/null, in a view template). */
#define BIND_ASIS 16

struct mount_op {
    int kind;
    const char *a, *b, *c, *d;
    size_t d_len;
    unsigned long flags;
    long num;
};

/* ---- the plan: everything that is the same for every launch of a profile ------ */
struct plan {
    unsigned long clone_flags;        /* CLONE_NEW* */
    char *uid_map, *gid_map;          /* written by the parent into /proc/PID/ */
    int deny_setgroups;
    long set_uid, set_gid;            /* -1: keep what the maps give */
    int become_root;                  /* our own ids are not mapped: switch to 0 inside first */
    int launch_ids;                   /* the maps come with each launch (spawn refuses without) */
    int clear_groups;
    char *hostname;
    int loopback;
    int nrlimits;
    struct { int resource; struct rlimit lim; } rlimits[MAX_RLIMITS];
    int no_new_privs;
    int drop_caps;
    uint64_t keep_caps;
    int last_cap;
    unsigned char *bpf;               /* seccomp program, or NULL */
    size_t bpf_len;
    int use_init;                     /* exec the sandbox's pid 1 before the program */
    int die_with_parent;
    int pidns;
    int netns_fd;                     /* setns() into this network namespace, or -1 */
    int nops;
    struct mount_op *ops;
    /* Landlock: the ruleset is built in the child, on the paths of its own view. */
    int landlock;
    uint64_t ll_handled_fs, ll_handled_net, ll_scoped;
    size_t ll_attr_size;
    int nll;
    struct ll_rule { const char *path; uint64_t access; int optional; } *ll_rules;
    char *strings;                    /* storage for every string above */
};

/* ---- what one launch passes to its child ---------------------------------------- */
struct launch {
    const struct plan *plan;
    char *const *exec_paths;          /* candidate paths for argv[0] */
    int nexec;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int nfds;
    const int *fd_src, *fd_dst;       /* the program's fd table */
    int status_fd;                    /* write end of the status pipe (O_CLOEXEC) */
    int sync_fd;                      /* read end: released once id maps are written */
    int init_fd;                      /* O_PATH fd of isolate-init, or -1 */
    char *const *init_argv;           /* argv for init, fds already numbered */
    int first_private;                /* first fd number after the program's fds */
    int parent_pidfd;                 /* pidfd of the caller process (for init) */
    int bpf_fd;                       /* memfd with the BPF program (for init) */
    int netns_fd;                     /* per-launch network namespace (pool), or -1 */
    char *const *cgroup_procs;        /* cgroup.procs files the parent puts the child in */
    int ncgroups;
    int late_cgroupns;                /* unshare the cgroup namespace after joining them */
    int cgroup_fd;                    /* cgroup.procs for init to empty (no pid namespace), or -1 */
    int ctty;                         /* fd 0 is a fresh pty: make it our controlling terminal */
    int64_t *timings;                 /* CLOCK_MONOTONIC ns per step (shared memory) */
    const char *uid_map, *gid_map;    /* per-launch maps (a host id of its own), else the plan's */
    long switch_uid, switch_gid;      /* >= 0: become these ids right after the maps */
    const int *op_fds;                /* per op: a detached tree (open_tree) to attach, or -1 */
    int umask;                        /* >= 0: the program's umask (set before exec), else inherited */
    int keep_ignored;                 /* restore_signals=False: ignored signals stay ignored */
    int ngroups;                      /* >= 0: the program's supplementary groups (extra_groups=) */
    const uint32_t *groups;
    /* cgroup v1: the calling thread moves itself into the new cgroups around the clone
     * (writing "0" to their `tasks`, which takes no global lock, unlike another process's
     * pid into cgroup.procs: that waits for an RCU grace period, milliseconds), so the
     * child is born in them; then back (orig). O_WRONLY fds, ncg_move of each; 0: unused. */
    int ncg_move;
    const int *cg_move_new, *cg_move_orig;
    /* The caller reads the status pipe itself, later (the native command: one wakeup
     * less): launch_core returns once the maps are written, leaves the child's stack
     * mapped (the child runs on it until its execve) and returns the pipe's read end. */
    int defer_status;
    /* Take a reference to the child's new mount namespace right after the clone
     * (launch_result.mntns_fd): the sandbox's exit then only drops one, and whoever
     * holds the fd tears the namespace down later, off the caller's path. 0: not. */
    int hold_mntns;
};

/* ---- child side ------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    rsys2(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void mark(const struct launch *l, int step)
{
    if (l->timings && step < MAX_TIMINGS)
        l->timings[step] = now_ns();
}

__attribute__((noreturn)) static void child_fail(const struct launch *l, int step, int index, long err)
{
    struct isolate_msg m = {MSG_ERROR, step, index, (int32_t)(err < 0 ? -err : err), 0};
    rsys3(SYS_write, l->status_fd, &m, sizeof m);
    for (;;)
        rsys1(SYS_exit_group, 127);
}

#define CHECK(l, step, index, expr)                  \
    do {                                             \
        long _r = (expr);                            \
        if (_r < 0)                                  \
            child_fail((l), (step), (index), _r);    \
    } while (0)

static int c_streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static size_t c_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* The child starts with every signal blocked (the parent blocked them around the
 * clone) and with a copy of the parent's handlers, which point into the parent's
 * code: reset them all before anything could unblock a signal. */
static void step_signals(const struct launch *l)
{
    struct sigaction_raw { void *handler; unsigned long flags; void *restorer; uint64_t mask; } dfl = {0};
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (l->keep_ignored) {
            /* SIG_IGN is no pointer into the parent: it may stay (subprocess's
             * restore_signals=False keeps SIGPIPE ignored across exec). */
            struct sigaction_raw old = {0};
            if (rsys4(SYS_rt_sigaction, sig, 0, &old, 8) == 0 && old.handler == (void *)SIG_IGN)
                continue;
        }
        rsys4(SYS_rt_sigaction, sig, &dfl, 0, 8);
    }
}

/* The parent writes uid_map/gid_map (only it may map ranges), then writes a byte;
 * EOF means the parent gave up. */
static void step_wait_for_id_maps(const struct launch *l)
{
    char b;
    if (l->sync_fd < 0)
        return;
    long r = rsys3(SYS_read, l->sync_fd, &b, 1);
    if (r != 1)
        child_fail(l, STEP_ID_MAPS, 0, r < 0 ? r : -EPIPE);
    rsys1(SYS_close, l->sync_fd);
    /* The parent has put us into our cgroups by now: a cgroup namespace made here is
     * rooted at our own cgroup and shows no host path above it. */
    if (l->late_cgroupns)
        CHECK(l, STEP_CGROUP, -1, rsys1(SYS_unshare, CLONE_NEWCGROUP));
    /* With ranges that do not map the caller's own ids, we are an unmapped id that
     * may create no file: become root of the namespace (we hold CAP_SETUID there). */
    if (l->plan->become_root) {
        CHECK(l, STEP_SETGID, 1, rsys3(SYS_setresgid, 0, 0, 0));
        CHECK(l, STEP_SETUID, 1, rsys3(SYS_setresuid, 0, 0, 0));
    }
    /* Mapped to a host id of its own: until now we are still the caller's host ids
     * (host root), which own the host's inodes. Become the mapped ids before anything
     * else; the capabilities in our namespace stay (we were not its root before). */
    if (l->switch_uid >= 0) {
        CHECK(l, STEP_SETGROUPS, 1, rsys2(SYS_setgroups, 0, 0));
        CHECK(l, STEP_SETGID, 2, rsys3(SYS_setresgid, l->switch_gid, l->switch_gid, l->switch_gid));
        CHECK(l, STEP_SETUID, 2, rsys3(SYS_setresuid, l->switch_uid, l->switch_uid, l->switch_uid));
    }
}

/* A new session: the program has no controlling terminal, so it cannot push
 * keystrokes into the caller's terminal (TIOCSTI) or get its signals. */
static void step_setsid(const struct launch *l)
{
    CHECK(l, STEP_SETSID, 0, rsys0(SYS_setsid));
}

/* Without isolate-init we are the program: fd 0, a pty the caller allocated for this
 * sandbox (fds.pty), becomes the controlling terminal of the session setsid made.
 * (isolate-init does this itself in the program's process.) Before seccomp. */
static void step_ctty(const struct launch *l)
{
    if (l->ctty && !l->plan->use_init)
        CHECK(l, STEP_SETSID, 1, rsys3(SYS_ioctl, 0, TIOCSCTTY, 0));
}

static void step_hostname(const struct launch *l)
{
    const char *h = l->plan->hostname;
    if (h)
        CHECK(l, STEP_HOSTNAME, 0, rsys2(SYS_sethostname, h, c_strlen(h)));
}

/* OP_BIND's num: the type of its source as the plan saw it (a directory or not), so
 * that the launch need not look it up; 0: look (an optional source may be gone). */
#define MP_DIR 1
#define MP_FILE 2
#define MP_THERE 3   /* the mount point exists (a view template made it): nothing to make */

/* The mount point at dst (left as it is when something is there already: the mount
 * goes over it): a directory for a directory, else an empty file (mknod of a regular
 * file: nothing is opened). */
static long mount_point_at(const char *dst, int dir)
{
    long r = dir ? rsys2(SYS_mkdir, dst, 0755) : rsys4(SYS_mknodat, AT_FDCWD, dst, S_IFREG | 0644, 0);
    return r == -EEXIST ? 0 : r;
}

/* Creates the mount point for a bind of `src`: a directory for a directory, an empty
 * file for anything else (type: MP_DIR or MP_FILE as the plan saw src, else 0). */
static long make_mount_point(const char *src, const char *dst, long type)
{
    if (type == MP_THERE)
        return 0;
    if (type == MP_DIR || type == MP_FILE)
        return mount_point_at(dst, type == MP_DIR);
    struct stat st;
    long r = rsys4(SYS_newfstatat, AT_FDCWD, src, &st, 0);
    if (r < 0)
        return r;
    return mount_point_at(dst, S_ISDIR(st.st_mode));
}

#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

/* A detached tree the parent prepared (idmapped where it could be): a mount point of
 * its type, then attach it. The parent opened it, so no host path above it needs to
 * be searchable by our ids. */
static long attach_tree(int fd, const char *dst, long type)
{
    struct stat st;
    long r;
    if (type != MP_THERE) {
        r = rsys4(SYS_newfstatat, fd, "", &st, AT_EMPTY_PATH);
        if (r < 0)
            return r;
        r = mount_point_at(dst, S_ISDIR(st.st_mode));
        if (r < 0)
            return r;
    }
    r = rsys5(SYS_move_mount, fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH);
    rsys1(SYS_close, fd);
    return r;
}

static void step_mounts(const struct launch *l)
{
    const struct plan *p = l->plan;
    /* The view's directories and files get exactly the modes the plan gives them, not
     * those less the caller's umask (which the program itself still inherits). */
    long old_umask = p->nops ? rsys1(SYS_umask, 0) : -1;
    for (int i = 0; i < p->nops; i++) {
        const struct mount_op *op = &p->ops[i];
        long r = 0;
        switch (op->kind) {
        case OP_MOUNT:
            r = rsys5(SYS_mount, op->a, op->b, op->c, op->flags, op->d);
            break;
        case OP_MKDIR:
            r = rsys2(SYS_mkdir, op->b, op->num);
            if (r == -EEXIST)
                r = 0;
            break;
        case OP_SYMLINK:
            r = rsys2(SYS_symlink, op->a, op->b);
            break;
        case OP_CHMOD:
            r = rsys2(SYS_chmod, op->b, op->num);
            break;
        case OP_WRITE: {
            long fd = rsys4(SYS_openat, AT_FDCWD, op->b, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, op->num);
            if (fd < 0) {
                r = fd;
                break;
            }
            size_t off = 0;
            while (off < op->d_len) {
                long w = rsys3(SYS_write, fd, op->d + off, op->d_len - off);
                if (w <= 0) {
                    r = w < 0 ? w : -EIO;
                    break;
                }
                off += (size_t)w;
            }
            rsys1(SYS_close, fd);
            break;
        }
        case OP_BIND: {
            if (l->op_fds && l->op_fds[i] >= 0) {
                r = attach_tree(l->op_fds[i], op->b, op->num);
                if (r < 0)
                    break;
                goto bind_attrs;
            }
            /* A path bound onto itself (/proc entries made read-only, the new root) is
             * its own mount point. */
            r = c_streq(op->a, op->b) ? 0 : make_mount_point(op->a, op->b, op->num);
            if (r == -ENOENT && (op->flags & BIND_OPTIONAL)) {
                r = 0;
                break;
            }
            if (r < 0)
                break;
            r = rsys5(SYS_mount, op->a, op->b, 0, MS_BIND | MS_REC, 0);
            if (r == -ENOENT && (op->flags & BIND_OPTIONAL)) {
                r = 0; /* an optional source that is not there (its mount point, if one was
                        * made, was there already: only binds of known sources skip the lookup) */
                break;
            }
            if (r < 0)
                break;
            if (op->flags & BIND_ASIS)
                break;
        bind_attrs:;
            /* A bind ignores MS_RDONLY and friends; mount_setattr sets them on the
             * whole subtree at once. nosuid always, nodev unless asked for. */
            struct mount_attr attr = {MOUNT_ATTR_NOSUID, 0, 0, 0};
            if (op->flags & BIND_READONLY)
                attr.attr_set |= MOUNT_ATTR_RDONLY;
            if (!(op->flags & BIND_DEV))
                attr.attr_set |= MOUNT_ATTR_NODEV;
            if (op->flags & BIND_NOEXEC)
                attr.attr_set |= MOUNT_ATTR_NOEXEC;
            r = rsys5(SYS_mount_setattr, AT_FDCWD, op->b, AT_RECURSIVE, &attr, sizeof attr);
            break;
        }
        case OP_REMOUNT:
            r = rsys5(SYS_mount, 0, op->b, 0, MS_REMOUNT | MS_BIND | op->flags, 0);
            break;
        case OP_PIVOT: {
            r = rsys1(SYS_chdir, op->b);
            if (r < 0)
                break;
            if (op->a) {
                /* The old root stays reachable at b/a, to bind from. */
                r = rsys2(SYS_pivot_root, ".", op->a);
            } else {
                /* pivot_root(".", ".") stacks the old root under the new one; detaching
                 * it leaves nothing of the previous tree reachable. */
                r = rsys2(SYS_pivot_root, ".", ".");
                if (r >= 0)
                    r = rsys2(SYS_umount2, ".", MNT_DETACH);
            }
            if (r >= 0)
                r = rsys1(SYS_chdir, "/");
            break;
        }
        case OP_UMOUNT:
            r = rsys2(SYS_umount2, op->b, MNT_DETACH);
            break;
        default:
            r = -EINVAL;
        }
        if (r < 0)
            child_fail(l, STEP_MOUNT, i, r);
    }
    if (old_umask >= 0)
        rsys1(SYS_umask, old_umask);
}

/* The loopback interface of a fresh network namespace starts down. */
static void step_loopback(const struct launch *l)
{
    if (!l->plan->loopback || l->netns_fd >= 0)
        return; /* a prepared namespace has lo up already */
    long s = rsys3(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        child_fail(l, STEP_LOOPBACK, 0, s);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_name[0] = 'l';
    ifr.ifr_name[1] = 'o';
    ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
    CHECK(l, STEP_LOOPBACK, 1, rsys3(SYS_ioctl, s, SIOCSIFFLAGS, &ifr));
    rsys1(SYS_close, s);
}

/* The fd table: the program gets exactly fd_dst[i] <- fd_src[i]; the private fds
 * go right after, at fixed slots (PRIV_*, known to the caller, which numbers init's
 * argv from them); everything else is closed.
 * Done before rlimits: a low RLIMIT_NOFILE would make the temporary dups fail. */
enum { PRIV_STATUS, PRIV_PARENT_PIDFD, PRIV_BPF, PRIV_CGROUP, PRIV_INIT, PRIV_COUNT };

/* close_range(lo, hi); on a kernel without it (before 5.9), close() every number up
 * to the largest the fd table can hold: the RLIMIT_NOFILE hard limit bounds every fd
 * this process could have been given (the limit can only have been lowered since). */
static long close_fds(unsigned lo, unsigned hi)
{
    long r = rsys3(SYS_close_range, lo, hi, 0);
    if (r != -ENOSYS)
        return r;
    struct rlimit lim;
    r = rsys4(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, &lim);
    if (r < 0)
        return r;
    /* nr_open caps the hard limit (1 << 20 by default); the table can be larger only
     * when a limit was lowered after fds were opened above it: cover the usual maximum. */
    unsigned long end = lim.rlim_max > (1UL << 20) ? lim.rlim_max : (1UL << 20);
    if (end > (1UL << 30))
        end = 1UL << 30;
    for (unsigned long fd = lo; fd <= hi && fd < end; fd++)
        rsys1(SYS_close, (int)fd);
    return 0;
}

static void step_fds(const struct launch *l)
{
    struct launch *ml = (struct launch *)l;
    int top = l->first_private;
    int use_init = l->plan->use_init;
    int priv_src[PRIV_COUNT] = {l->status_fd, use_init ? l->parent_pidfd : -1, use_init ? l->bpf_fd : -1,
                                use_init ? l->cgroup_fd : -1, use_init ? l->init_fd : -1};
    /* Close-on-exec unless isolate-init is exec'd next and needs it. */
    int priv_cloexec[PRIV_COUNT] = {!use_init, 0, 0, 0, 1};

    /* Every source is first copied to a temporary above every destination and every
     * private slot (the lowest free numbers there: F_DUPFD never takes an open one),
     * so no dup3 below can clobber a copy that is still needed. Not above the
     * sources: a passed fd near RLIMIT_NOFILE would leave no room. */
    int base = top + PRIV_COUNT;

    int tmp[1024 + PRIV_COUNT] = {0};
    if (l->nfds > 1024)
        child_fail(l, STEP_FDS, -1, -EMFILE);
    for (int i = 0; i < l->nfds + PRIV_COUNT; i++) {
        int src = i < l->nfds ? l->fd_src[i] : priv_src[i - l->nfds];
        tmp[i] = -1;
        if (src < 0)
            continue;
        long r = rsys3(SYS_fcntl, src, F_DUPFD_CLOEXEC, base);
        if (r < 0)
            child_fail(l, STEP_FDS, i < l->nfds ? l->fd_dst[i] : top + i - l->nfds, r);
        tmp[i] = (int)r;
    }
    /* The status pipe's original number may be a destination below (a caller that
     * closed fd 0 gets its pipe there): report through the temporary copy. */
    ml->status_fd = tmp[l->nfds + PRIV_STATUS];
    for (int i = 0; i < l->nfds; i++)
        CHECK(l, STEP_FDS, l->fd_dst[i], rsys3(SYS_dup3, tmp[i], l->fd_dst[i], 0));
    for (int i = 0; i < PRIV_COUNT; i++) {
        int t = tmp[l->nfds + i];
        if (t < 0)
            continue;
        CHECK(l, STEP_FDS, top + i, rsys3(SYS_dup3, t, top + i, priv_cloexec[i] ? O_CLOEXEC : 0));
    }
    ml->status_fd = top + PRIV_STATUS;
    if (l->init_fd >= 0 && use_init)
        ml->init_fd = top + PRIV_INIT;

    /* Close every fd that is not in the table, whatever the caller had open: the
     * gaps below `top`, the private slots that stay unused (a caller's inheritable fd
     * may sit at that number), then everything above. What is left is exactly the
     * program's table plus the private fds in use. */
    int keep_fd[PRIV_COUNT + 1];
    for (int i = 0; i < PRIV_COUNT; i++)
        keep_fd[i] = tmp[l->nfds + i] >= 0;
    long r = 0;
    int lo = 0;
    for (int fd = 0; fd < top + PRIV_COUNT; fd++) {
        int keep = 0;
        if (fd >= top)
            keep = keep_fd[fd - top];
        else
            for (int i = 0; i < l->nfds; i++)
                if (l->fd_dst[i] == fd)
                    keep = 1;
        if (keep) {
            if (lo < fd && (r = close_fds(lo, fd - 1)) < 0)
                child_fail(l, STEP_FDS, lo, r);
            lo = fd + 1;
        }
    }
    if ((r = close_fds(lo, ~0U)) < 0)
        child_fail(l, STEP_FDS, lo, r);
}

static void step_rlimits(const struct launch *l)
{
    const struct plan *p = l->plan;
    for (int i = 0; i < p->nrlimits; i++)
        CHECK(l, STEP_RLIMIT, p->rlimits[i].resource,
              rsys4(SYS_prlimit64, 0, p->rlimits[i].resource, &p->rlimits[i].lim, 0));
}

static void step_chdir(const struct launch *l)
{
    if (l->cwd)
        CHECK(l, STEP_CHDIR, 0, rsys1(SYS_chdir, l->cwd));
}

/* Drop the bounding set while we still hold CAP_SETPCAP (before any uid change). */
static void step_caps_bounding(const struct launch *l)
{
    const struct plan *p = l->plan;
    if (!p->drop_caps)
        return;
    for (int c = 0; c <= p->last_cap; c++) {
        if (p->keep_caps & (1ULL << c))
            continue;
        long r = rsys5(SYS_prctl, PR_CAPBSET_DROP, c, 0, 0, 0);
        /* Without CAP_SETPCAP (an unprivileged caller without a user namespace) the
         * bounding set cannot shrink; such a caller holds no capability and
         * no_new_privs stops exec from granting any, so nothing is lost. */
        if (r == -EPERM && p->no_new_privs && p->keep_caps == 0)
            break;
        if (r < 0 && r != -EINVAL)
            child_fail(l, STEP_CAPS_BOUND, c, r);
    }
}

static void step_ids(const struct launch *l)
{
    const struct plan *p = l->plan;
    if (p->keep_caps)
        CHECK(l, STEP_CAPS, -1, rsys5(SYS_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0));
    if (p->clear_groups)
        CHECK(l, STEP_SETGROUPS, 0, rsys2(SYS_setgroups, 0, 0));
    if (l->ngroups >= 0) /* extra_groups=: while we may still set them */
        CHECK(l, STEP_SETGROUPS, 2, rsys2(SYS_setgroups, l->ngroups, l->groups));
    if (p->set_gid >= 0)
        CHECK(l, STEP_SETGID, 0, rsys3(SYS_setresgid, p->set_gid, p->set_gid, p->set_gid));
    if (p->set_uid >= 0)
        CHECK(l, STEP_SETUID, 0, rsys3(SYS_setresuid, p->set_uid, p->set_uid, p->set_uid));
}

static void step_no_new_privs(const struct launch *l)
{
    if (l->plan->no_new_privs)
        CHECK(l, STEP_NO_NEW_PRIVS, 0, rsys5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
}

/* Effective, permitted and inheritable become exactly the kept set; kept
 * capabilities are raised as ambient so they survive exec for a non-root uid. */
static void step_caps(const struct launch *l)
{
    const struct plan *p = l->plan;
    if (!p->drop_caps)
        return;
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    uint32_t lo = (uint32_t)(p->keep_caps & 0xffffffffu), hi = (uint32_t)(p->keep_caps >> 32);
    data[0].effective = data[0].permitted = data[0].inheritable = lo;
    data[1].effective = data[1].permitted = data[1].inheritable = hi;
    CHECK(l, STEP_CAPS, 0, rsys2(SYS_capset, &hdr, data));
    rsys5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for (int c = 0; c <= p->last_cap; c++)
        if (p->keep_caps & (1ULL << c))
            CHECK(l, STEP_CAPS, c, rsys5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0));
}

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#endif
#define LL_EXECUTE 1ULL
#define LL_READ_FILE (1ULL << 2)
#define LL_FILE_RIGHTS (LL_EXECUTE | (1ULL << 1) | LL_READ_FILE | (1ULL << 14) | (1ULL << 15))

/* Landlock, built here because its rules name objects of the finished view (a
 * tmpfs or /proc made a moment ago has no inode the parent could have named).
 * With init, the sandbox's pid 1 binary gets execute and read, nothing else. */
static void step_landlock(const struct launch *l)
{
    const struct plan *p = l->plan;
    if (!p->landlock)
        return;
    struct { uint64_t fs, net, scoped; } attr = {p->ll_handled_fs, p->ll_handled_net, p->ll_scoped};
    long rs = rsys3(SYS_landlock_create_ruleset, &attr, p->ll_attr_size, 0);
    if (rs < 0)
        child_fail(l, STEP_LANDLOCK, -1, rs);
    struct __attribute__((packed)) { uint64_t allowed; int32_t parent_fd; } rule;
    for (int i = 0; i < p->nll; i++) {
        long fd = rsys4(SYS_openat, AT_FDCWD, p->ll_rules[i].path, O_PATH | O_CLOEXEC, 0);
        if (fd < 0) {
            /* An optional path that is gone, or that our uid cannot reach (then its
             * permissions refuse it anyway), needs no rule. */
            if ((fd == -ENOENT || fd == -EACCES) && p->ll_rules[i].optional)
                continue;
            child_fail(l, STEP_LANDLOCK, i, fd);
        }
        rule.allowed = p->ll_rules[i].access;
        struct stat st;
        if (rsys4(SYS_newfstatat, fd, "", &st, AT_EMPTY_PATH) == 0 && !S_ISDIR(st.st_mode))
            rule.allowed &= LL_FILE_RIGHTS; /* a rule on a file takes only file rights */
        rule.parent_fd = (int32_t)fd;
        long r = rsys4(SYS_landlock_add_rule, rs, 1 /* LANDLOCK_RULE_PATH_BENEATH */, &rule, 0);
        rsys1(SYS_close, fd);
        if (r < 0)
            child_fail(l, STEP_LANDLOCK, i, r);
    }
    if (p->use_init) {
        rule.allowed = LL_EXECUTE | LL_READ_FILE;
        rule.parent_fd = l->init_fd;
        CHECK(l, STEP_LANDLOCK, p->nll, rsys4(SYS_landlock_add_rule, rs, 1, &rule, 0));
    }
    CHECK(l, STEP_LANDLOCK, -2, rsys2(SYS_landlock_restrict_self, rs, 0));
    rsys1(SYS_close, rs);
}

/* Last before exec: from here on every system call, exec included, is filtered. */
static void step_seccomp(const struct launch *l)
{
    const struct plan *p = l->plan;
    if (!p->bpf || p->use_init)
        return; /* with init, pid 1 installs it in the program's own process */
    struct sock_fprog prog = {(unsigned short)(p->bpf_len / sizeof(struct sock_filter)),
                              (struct sock_filter *)p->bpf};
    CHECK(l, STEP_SECCOMP, 0, rsys3(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
}

static void step_unblock_signals(const struct launch *l)
{
    uint64_t none = 0;
    (void)l;
    rsys4(SYS_rt_sigprocmask, SIG_SETMASK, &none, 0, 8);
}

__attribute__((noreturn)) static void step_exec(const struct launch *l)
{
    if (l->plan->use_init) {
        long r = rsys5(SYS_execveat, l->init_fd, "", l->init_argv, l->envp, AT_EMPTY_PATH);
        child_fail(l, STEP_EXEC_INIT, 0, r);
    }
    /* Like execvpe: try each candidate path; remember EACCES over ENOENT. */
    long err = -ENOENT;
    for (int i = 0; i < l->nexec; i++) {
        long r = rsys3(SYS_execve, l->exec_paths[i], l->argv, l->envp);
        if (r == -EACCES)
            err = r;
        else if (r != -ENOENT && r != -ENOTDIR && r != -ENAMETOOLONG) {
            err = r;
            break;
        }
    }
    child_fail(l, STEP_EXEC, 0, err);
}

/* The order matters, and each line says why it is where it is. */
static int child_main(void *arg)
{
    const struct launch *l = arg;
    mark(l, STEP_CLONE);
    step_signals(l);              /* before anything: parent handlers must never run here */
    step_wait_for_id_maps(l);     /* everything below needs our uid/gid to be mapped */
    mark(l, STEP_ID_MAPS);
    step_setsid(l);               /* detach from the caller's terminal and process group */
    step_hostname(l);             /* in our own UTS namespace */
    step_mounts(l);               /* the filesystem view; ends with pivot_root */
    mark(l, STEP_MOUNT);
    step_loopback(l);             /* lo up in a new network namespace */
    mark(l, STEP_LOOPBACK);
    step_fds(l);                  /* before rlimits: RLIMIT_NOFILE could block the dups */
    mark(l, STEP_FDS);
    step_ctty(l);                 /* fd 0 is in place; before seccomp denies TIOCSCTTY */
    step_rlimits(l);
    step_chdir(l);                /* after the mounts: cwd is a path in the new view */
    if (l->umask >= 0)            /* after the mounts (their mount points keep their modes); */
        rsys1(SYS_umask, l->umask & 0777); /* before seccomp; pid 1 and the program inherit it */
    step_caps_bounding(l);        /* while CAP_SETPCAP is still ours */
    step_ids(l);                  /* may drop root, and with it our capabilities */
    step_no_new_privs(l);         /* required for an unprivileged seccomp filter */
    step_caps(l);
    step_landlock(l);
    mark(l, STEP_CAPS);
    step_seccomp(l);              /* last: it filters what follows */
    mark(l, STEP_SECCOMP);
    step_unblock_signals(l);      /* exec keeps the mask: the program starts with none */
    step_exec(l);
}

/* ---- parent side ------------------------------------------------------------------- */

#if defined(__x86_64__)
/* clone3 with a new stack: the child comes back from the syscall on that stack, so
 * it must not return into C code compiled for the parent's frame. It calls fn(arg)
 * and exits. (glibc offers no public clone3 wrapper.) */
static long clone3_vm(struct clone_args *args, int (*fn)(void *), void *arg)
{
    long ret;
    register long r12 __asm__("r12") = (long)fn;
    register long r13 __asm__("r13") = (long)arg;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t"
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory");
    return ret;
}
#define HAVE_CLONE3_VM 1
#endif

static int force_legacy_clone = 0;

/* Returns the child's pid (>0) with *pidfd set, or -errno. */
static long do_clone(unsigned long flags, void *stack, size_t stack_size, struct launch *l, int *pidfd, int *used_clone3)
{
    *used_clone3 = 0;
#ifdef HAVE_CLONE3_VM
    if (!force_legacy_clone) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = flags | CLONE_VM | CLONE_PIDFD;
        args.pidfd = (uint64_t)(uintptr_t)pidfd;
        args.exit_signal = SIGCHLD;
        args.stack = (uint64_t)(uintptr_t)stack;
        args.stack_size = stack_size;
        long r = clone3_vm(&args, child_main, l);
        if (r != -ENOSYS && r != -EPERM) {
            *used_clone3 = 1;
            return r;
        }
        /* ENOSYS: an old kernel, or a container policy that refuses clone3 so that
         * its flags can be inspected: fall back to clone, which carries them in a
         * register. */
    }
#endif
    int r = clone(child_main, (char *)stack + stack_size, (int)(flags | CLONE_VM | CLONE_PIDFD | SIGCHLD), l, pidfd);
    return r < 0 ? -errno : r;
}

static int write_proc_file(pid_t pid, const char *name, const char *data)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(data);
    ssize_t w = write(fd, data, len);
    int err = w < 0 ? -errno : ((size_t)w == len ? 0 : -EIO);
    close(fd);
    return err;
}

#include "_plancache.h"

#ifndef ISOLATE_NO_PYTHON
static PyObject *ChildError;

static void free_plan(struct plan *p)
{
    if (!p)
        return;
    PyMem_RawFree(p->ops);
    PyMem_RawFree(p->ll_rules);
    PyMem_RawFree(p->strings);
    PyMem_RawFree(p->bpf);
    PyMem_RawFree(p);
}

static void plan_capsule_destructor(PyObject *cap)
{
    free_plan(PyCapsule_GetPointer(cap, "isolate.plan"));
}

/* A bump allocator for a plan's strings: one block, freed with the plan. */
struct strbuf { char *base; size_t used, cap; };

static const char *sb_add(struct strbuf *sb, PyObject *o, size_t *len_out)
{
    if (o == Py_None)
        return NULL;
    char *s;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(o, &s, &n) < 0)
        return NULL;
    if (sb->used + (size_t)n + 1 > sb->cap) {
        PyErr_SetString(PyExc_OverflowError, "plan strings exceed their block");
        return NULL;
    }
    char *dst = sb->base + sb->used;
    memcpy(dst, s, (size_t)n);
    dst[n] = 0;
    sb->used += (size_t)n + 1;
    if (len_out)
        *len_out = (size_t)n;
    return dst;
}

static size_t obj_len(PyObject *o)
{
    return (o && PyBytes_Check(o)) ? (size_t)PyBytes_GET_SIZE(o) + 1 : 0;
}

/* make_plan(**fields) -> capsule. isolate/launch/plans.py is the only caller. */
static PyObject *make_plan(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"clone_flags", "uid_map", "gid_map", "deny_setgroups", "set_uid", "set_gid",
                             "clear_groups", "hostname", "loopback", "rlimits", "no_new_privs", "drop_caps",
                             "keep_caps", "last_cap", "bpf", "use_init", "die_with_parent", "netns_fd", "ops",
                             "become_root", "landlock", "launch_ids", NULL};
    unsigned long clone_flags = 0;
    PyObject *uid_map = Py_None, *gid_map = Py_None, *hostname = Py_None, *rlimits = NULL, *bpf = Py_None, *ops = NULL;
    int deny_setgroups = 0, clear_groups = 0, loopback = 0, nnp = 1, drop_caps = 1, last_cap = 40, use_init = 0,
        dwp = 0, netns_fd = -1, become_root = 0, launch_ids = 0;
    long set_uid = -1, set_gid = -1;
    unsigned long long keep_caps = 0;
    PyObject *landlock = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|kOOpllpOpO!ppKiOppiO!pOp", kwlist, &clone_flags, &uid_map, &gid_map,
                                     &deny_setgroups, &set_uid, &set_gid, &clear_groups, &hostname, &loopback,
                                     &PyList_Type, &rlimits, &nnp, &drop_caps, &keep_caps, &last_cap, &bpf,
                                     &use_init, &dwp, &netns_fd, &PyList_Type, &ops, &become_root, &landlock,
                                     &launch_ids))
        return NULL;

    struct plan *p = PyMem_RawCalloc(1, sizeof *p);
    if (!p)
        return PyErr_NoMemory();
    p->clone_flags = clone_flags;
    p->deny_setgroups = deny_setgroups;
    p->set_uid = set_uid;
    p->set_gid = set_gid;
    p->become_root = become_root;
    p->launch_ids = launch_ids;
    p->clear_groups = clear_groups;
    p->loopback = loopback;
    p->no_new_privs = nnp;
    p->drop_caps = drop_caps;
    p->keep_caps = keep_caps;
    p->last_cap = last_cap;
    p->use_init = use_init;
    p->die_with_parent = dwp;
    p->pidns = (clone_flags & CLONE_NEWPID) != 0;
    p->netns_fd = netns_fd;

    /* Size the string block: maps, hostname, every op string. */
    size_t need = obj_len(uid_map) + obj_len(gid_map) + obj_len(hostname) + 1;
    Py_ssize_t nops = ops ? PyList_GET_SIZE(ops) : 0;
    for (Py_ssize_t i = 0; i < nops; i++) {
        PyObject *t = PyList_GET_ITEM(ops, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 7) {
            free_plan(p);
            PyErr_SetString(PyExc_TypeError, "ops: expected (kind, a, b, c, d, flags, num) tuples");
            return NULL;
        }
        for (int j = 1; j <= 4; j++)
            need += obj_len(PyTuple_GET_ITEM(t, j));
    }
    /* landlock = (handled_fs, handled_net, scoped, attr_size, [(path, access, optional), ...]) */
    PyObject *ll_list = NULL;
    unsigned long long ll_fs = 0, ll_net = 0, ll_scoped = 0, ll_size = 0;
    if (landlock != Py_None) {
        if (!PyArg_ParseTuple(landlock, "KKKKO!", &ll_fs, &ll_net, &ll_scoped, &ll_size, &PyList_Type, &ll_list)) {
            free_plan(p);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ll_list); i++) {
            PyObject *t = PyList_GET_ITEM(ll_list, i);
            if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
                free_plan(p);
                PyErr_SetString(PyExc_TypeError, "landlock rules: expected (path, access, optional)");
                return NULL;
            }
            need += obj_len(PyTuple_GET_ITEM(t, 0));
        }
    }
    struct strbuf sb = {PyMem_RawMalloc(need), 0, need};
    p->strings = sb.base;
    if (!sb.base) {
        free_plan(p);
        return PyErr_NoMemory();
    }
    p->uid_map = (char *)sb_add(&sb, uid_map, NULL);
    p->gid_map = (char *)sb_add(&sb, gid_map, NULL);
    p->hostname = (char *)sb_add(&sb, hostname, NULL);
    if (PyErr_Occurred()) {
        free_plan(p);
        return NULL;
    }

    if (rlimits) {
        Py_ssize_t n = PyList_GET_SIZE(rlimits);
        if (n > MAX_RLIMITS) {
            free_plan(p);
            PyErr_SetString(PyExc_ValueError, "too many rlimits");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            int res;
            unsigned long long soft, hard;
            if (!PyArg_ParseTuple(PyList_GET_ITEM(rlimits, i), "iKK", &res, &soft, &hard)) {
                free_plan(p);
                return NULL;
            }
            p->rlimits[i].resource = res;
            p->rlimits[i].lim.rlim_cur = (rlim_t)soft;
            p->rlimits[i].lim.rlim_max = (rlim_t)hard;
        }
        p->nrlimits = (int)n;
    }

    if (bpf != Py_None) {
        char *s;
        Py_ssize_t n;
        if (PyBytes_AsStringAndSize(bpf, &s, &n) < 0 || n % sizeof(struct sock_filter) != 0 || n == 0 ||
            n / (Py_ssize_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
            free_plan(p);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "bpf: not a seccomp program");
            return NULL;
        }
        p->bpf = PyMem_RawMalloc((size_t)n);
        if (!p->bpf) {
            free_plan(p);
            return PyErr_NoMemory();
        }
        memcpy(p->bpf, s, (size_t)n);
        p->bpf_len = (size_t)n;
    }

    if (nops) {
        p->ops = PyMem_RawCalloc((size_t)nops, sizeof *p->ops);
        if (!p->ops) {
            free_plan(p);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < nops; i++) {
            PyObject *t = PyList_GET_ITEM(ops, i);
            struct mount_op *op = &p->ops[i];
            op->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
            op->a = sb_add(&sb, PyTuple_GET_ITEM(t, 1), NULL);
            op->b = sb_add(&sb, PyTuple_GET_ITEM(t, 2), NULL);
            op->c = sb_add(&sb, PyTuple_GET_ITEM(t, 3), NULL);
            op->d = sb_add(&sb, PyTuple_GET_ITEM(t, 4), &op->d_len);
            op->flags = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, 5));
            op->num = PyLong_AsLong(PyTuple_GET_ITEM(t, 6));
            if (PyErr_Occurred()) {
                free_plan(p);
                return NULL;
            }
        }
        p->nops = (int)nops;
    }
    if (ll_list) {
        Py_ssize_t n = PyList_GET_SIZE(ll_list);
        p->landlock = 1;
        p->ll_handled_fs = ll_fs;
        p->ll_handled_net = ll_net;
        p->ll_scoped = ll_scoped;
        p->ll_attr_size = (size_t)ll_size;
        p->ll_rules = PyMem_RawCalloc((size_t)n + 1, sizeof *p->ll_rules);
        if (!p->ll_rules) {
            free_plan(p);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *t = PyList_GET_ITEM(ll_list, i);
            p->ll_rules[i].path = sb_add(&sb, PyTuple_GET_ITEM(t, 0), NULL);
            p->ll_rules[i].access = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 1));
            p->ll_rules[i].optional = PyObject_IsTrue(PyTuple_GET_ITEM(t, 2));
            if (PyErr_Occurred() || !p->ll_rules[i].path) {
                free_plan(p);
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "landlock rule path: expected bytes");
                return NULL;
            }
        }
        p->nll = (int)n;
    }
    PyObject *cap = PyCapsule_New(p, "isolate.plan", plan_capsule_destructor);
    if (!cap)
        free_plan(p);
    return cap;
}

/* A NULL-terminated char* array pointing into the bytes objects of a sequence. The
 * caller keeps the sequence (and so the bytes) alive. */
static char **bytes_array(PyObject *seq, int *count)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    char **arr = PyMem_RawCalloc((size_t)n + 1, sizeof(char *));
    if (!arr) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(o)) {
            PyMem_RawFree(arr);
            PyErr_SetString(PyExc_TypeError, "expected bytes");
            return NULL;
        }
        arr[i] = PyBytes_AS_STRING(o);
    }
    if (count)
        *count = (int)n;
    return arr;
}

#endif /* ISOLATE_NO_PYTHON */

static const char *step_names[] = {
    "none", "clone", "id_maps", "setsid", "hostname", "mount", "loopback", "fds", "rlimit", "chdir",
    "caps_bounding", "setgroups", "setgid", "setuid", "no_new_privs", "caps", "seccomp", "exec", "exec_init",
    "init", "signals", "netns", "landlock", "cgroup", "pdeathsig",
};

/* The launch itself, Python-free (also compiled into the native `isolate` command,
 * isolate/launch/_cli.c): clone the child of `l`, put it into its cgroups, write its id
 * maps, read its first status record. The caller fills `l` (but for status_fd, sync_fd
 * and timings) and owns what it passed in. */
struct launch_result {
    long pid;
    int pidfd, status_fd;             /* status_fd: the open status pipe (with init), or -1 */
    int err, step, index, used_clone3;
    int64_t t_start, t_end;
    int mntns_fd;                     /* with hold_mntns: the child's mount namespace, or -1 */
    long long mntns_token;            /* or, held by the closing thread instead: its token (else 0) */
};

#ifndef ISOLATE_NO_PYTHON
static long long hold_give(int fd);
static void hold_release(long long token);
#endif

/* fd itself, or a close-on-exec copy of it at 3 or above (the original closed) when it
 * is 0, 1 or 2; fd when no copy can be made (it stays ours). */
static int above_std(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (moved < 0)
        return fd;
    close(fd);
    return moved;
}

#ifndef PIDFD_GET_MNT_NAMESPACE
#define PIDFD_GET_MNT_NAMESPACE _IO(0xFF, 3) /* linux/pidfd.h, 6.11+ */
#endif

static void launch_core(struct launch *l, int mntns_fd, int ncgroups, char *const *c_cgroups, int64_t *timings,
                        struct launch_result *res)
{
    const struct plan *p = l->plan;
    void *stack = MAP_FAILED;
    int pipefd[2] = {-1, -1}, syncfd[2] = {-1, -1}, pidfd = -1;
    l->timings = timings;
    int err = 0, step = STEP_NONE, index = 0, used_clone3 = 0;
    long pid = -1;
    struct isolate_msg msg;
    int have_msg = 0;
    int64_t t_start = 0, t_end = 0;
    int held_mntns = -1;
    long long held_token = 0;

    t_start = now_ns();
    stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        err = errno;
        step = STEP_CLONE;
    } else if (pipe2(pipefd, O_CLOEXEC) < 0 ||
               (((p->clone_flags & CLONE_NEWUSER) || ncgroups) && pipe2(syncfd, O_CLOEXEC) < 0)) {
        err = errno;
        step = STEP_CLONE;
    } else {
        l->status_fd = pipefd[1];
        l->sync_fd = syncfd[0];
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        /* A prepared network namespace is joined by this thread around the clone: the
         * child, born in its own user namespace, could not join one owned by ours.
         * setns(CLONE_NEWNET) affects only the calling thread. */
        int netns_fd = l->netns_fd >= 0 ? l->netns_fd : p->netns_fd;
        int saved_netns = -1;
        if (netns_fd >= 0) {
            saved_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
            if (saved_netns < 0 || setns(netns_fd, CLONE_NEWNET) < 0) {
                err = errno;
                step = STEP_NETNS;
            }
        }
        /* A namespace prepared for this launch replaces the one clone would make. */
        unsigned long flags = l->netns_fd >= 0 ? (p->clone_flags & ~(unsigned long)CLONE_NEWNET) : p->clone_flags;
        if (ncgroups && (flags & CLONE_NEWCGROUP)) {
            flags &= ~(unsigned long)CLONE_NEWCGROUP;
            l->late_cgroupns = 1;
        }
        /* A template mount namespace (a small one holding only what the view binds
         * from): cloned from there, CLONE_NEWNS copies it instead of the caller's
         * whole mount table. setns into a mount namespace needs a thread with an
         * fs_struct of its own: spawn runs launch_core in a thread of its own then
         * (launch_core_template). */
        int saved_mntns = -1;
        if (!err && mntns_fd >= 0) {
            static __thread int fs_private;
            if (!fs_private && unshare(CLONE_FS) == 0)
                fs_private = 1;
            saved_mntns = open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC);
            if (!fs_private || saved_mntns < 0 || setns(mntns_fd, CLONE_NEWNS) < 0) {
                err = errno ? errno : EINVAL;
                step = STEP_MOUNT;
                index = -1;
            }
        }
        int moved = 0;
        for (; !err && moved < l->ncg_move; moved++)
            if (write(l->cg_move_new[moved], "0", 1) != 1)
                break;
        if (moved < l->ncg_move) { /* not possible here: back, and cgroup.procs below */
            for (int i = 0; i < moved; i++)
                if (write(l->cg_move_orig[i], "0", 1) != 1)
                    abort(); /* this thread must not stay in the sandbox's cgroup */
            moved = 0;
        }
        if (!err)
            pid = do_clone(flags, stack, CHILD_STACK_SIZE, l, &pidfd, &used_clone3);
        for (int i = 0; i < moved; i++)
            if (write(l->cg_move_orig[i], "0", 1) != 1)
                abort(); /* this thread must not stay in the sandbox's cgroup */
        if (moved)
            ncgroups = 0; /* born in them */
        if (saved_mntns >= 0) {
            if (setns(saved_mntns, CLONE_NEWNS) < 0)
                abort(); /* this thread must not stay in the template */
            close(saved_mntns);
        }
        if (saved_netns >= 0) {
            if (setns(saved_netns, CLONE_NEWNET) < 0)
                abort(); /* this thread must not stay in the sandbox's network */
            close(saved_netns);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        close(pipefd[1]);
        pipefd[1] = -1;
        if (syncfd[0] >= 0) {
            close(syncfd[0]);
            syncfd[0] = -1;
        }
        if (err) {
            pid = -1;
        } else if (pid < 0) {
            err = (int)-pid;
            step = STEP_CLONE;
        } else {
            /* Before the child can run a step (it waits for its maps, or has just begun):
             * the namespace is the one clone made for it. A kernel without the ioctl
             * (before 6.11): no reference, the exit tears it down as before. */
            if (l->hold_mntns && (flags & CLONE_NEWNS) && pidfd >= 0)
                held_mntns = ioctl(pidfd, PIDFD_GET_MNT_NAMESPACE, 0);
#ifndef ISOLATE_NO_PYTHON
            /* Out of the process's fd table at once, into the closing thread's own: a
             * child cloned by another launch copies the table, and the last copy closed
             * tears the namespace down (in that child's setup, if it came last). */
            if (held_mntns >= 0 && (held_token = hold_give(held_mntns)) > 0)
                held_mntns = -1;
#endif
            if (syncfd[1] >= 0) {
                /* Only the parent may write a map of more than its own id. Without
                 * privilege, setgroups must be denied before gid_map is written. */
                int r = 0;
                /* Into its cgroups before it runs anything of its own: every process
                 * it starts is then counted and limited. */
                char pidbuf[24];
                snprintf(pidbuf, sizeof pidbuf, "%ld", pid);
                for (int i = 0; i < ncgroups && !r; i++) {
                    int fd = open(c_cgroups[i], O_WRONLY | O_CLOEXEC);
                    if (fd < 0 || write(fd, pidbuf, strlen(pidbuf)) < 0)
                        r = -errno;
                    if (fd >= 0)
                        close(fd);
                    if (r) {
                        err = -r;
                        step = STEP_CGROUP;
                        index = i;
                    }
                }
                if (!r && (p->clone_flags & CLONE_NEWUSER)) {
                    if (p->deny_setgroups)
                        r = write_proc_file((pid_t)pid, "setgroups", "deny");
                    if (!r && l->gid_map)
                        r = write_proc_file((pid_t)pid, "gid_map", l->gid_map);
                    if (!r && l->uid_map)
                        r = write_proc_file((pid_t)pid, "uid_map", l->uid_map);
                    if (r) {
                        err = -r;
                        step = STEP_ID_MAPS;
                    }
                }
                if (err) {
                    /* Reported below. The child holds a copy of the sync pipe's write
                     * end, so it would wait for our byte forever (and we for its
                     * record): kill it now; the status pipe then reads EOF. */
                    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                } else if (write(syncfd[1], "x", 1) != 1) {
                    err = errno;
                    step = STEP_ID_MAPS;
                }
                close(syncfd[1]);
                syncfd[1] = -1;
            }
            /* The first record tells how the setup went; EOF means the program
             * exec'd (the pipe is close-on-exec in it). */
            ssize_t n = 0;
            do {
                n = (l->defer_status && !err) ? 0 : read(pipefd[0], &msg, sizeof msg);
            } while (n < 0 && errno == EINTR);
            if (n == (ssize_t)sizeof msg) {
                have_msg = 1;
                if (msg.kind == MSG_STARTED && msg.t > 0)
                    timings[STEP_INIT] = msg.t; /* when pid 1 began: splits exec(init) from the rest */
                if (msg.kind == MSG_ERROR && !err) {
                    step = msg.a;
                    index = msg.b;
                    err = msg.c;
                }
            }
            if (err) {
                /* The child (or init) is exiting: kill it to be sure, then reap it
                 * so that its stack (our memory) is no longer in use. */
                syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                int st;
                while (waitpid((pid_t)pid, &st, __WALL) < 0 && errno == EINTR)
                    ;
            }
        }
    }
    if (stack != MAP_FAILED && !(l->defer_status && !err))
        munmap(stack, CHILD_STACK_SIZE);
    t_end = now_ns();

    if (syncfd[0] >= 0)
        close(syncfd[0]);
    if (syncfd[1] >= 0)
        close(syncfd[1]);
    if (err) {
        if (pipefd[0] >= 0)
            close(pipefd[0]);
        if (pidfd >= 0)
            close(pidfd);
        pipefd[0] = pidfd = -1;
        if (held_mntns >= 0)
            close(held_mntns); /* the child was reaped above: this is the last reference */
        held_mntns = -1;
#ifndef ISOLATE_NO_PYTHON
        if (held_token > 0)
            hold_release(held_token);
#endif
        held_token = 0;
    }
    int status_fd = -1;
    if (!err) {
        status_fd = pipefd[0];
    /* Without init the status pipe has done its job. With init, the first record was
     * MSG_STARTED and the pipe stays open for MSG_EXITED. */
    if (l->defer_status) {
    } else if (!p->use_init) {
        close(status_fd);
        status_fd = -1;
    } else if (!have_msg || msg.kind != MSG_STARTED) {
        /* init ended without a word: it was killed before the program started. */
        close(status_fd);
        status_fd = -1;
    }
    }
    /* The fds the caller keeps go above 0, 1 and 2: a caller that closed those (CPython's
     * own subprocess tests do) dup2s its files back onto them later, which would replace
     * ours (subprocess does the same for its error pipe). */
    pidfd = above_std(pidfd);
    status_fd = above_std(status_fd);
    held_mntns = above_std(held_mntns);
    res->pid = pid;
    res->pidfd = pidfd;
    res->status_fd = err ? -1 : status_fd;
    res->err = err;
    res->step = step;
    res->index = index;
    res->used_clone3 = used_clone3;
    res->t_start = t_start;
    res->t_end = t_end;
    res->mntns_fd = held_mntns < 0 ? -1 : held_mntns;
    res->mntns_token = held_token;
}

#ifndef ISOLATE_NO_PYTHON
/* ---- admission: at most `admit_limit` launches in the launch path at once ----------
 *
 * With many more launching threads than CPUs (32 threads on 2 CPUs), every launch in
 * flight has a child doing its mount steps, and they contend for the CPUs and for the
 * kernel's mount and RCU machinery: each one takes longer, and the CPUs idle in the
 * convoys. A launch beyond the limit waits (no GIL, no spinning) on a condition of its
 * own, in a FIFO queue; a launch leaving hands its slot to the first in line. A
 * waiter that has waited ADMIT_PATIENCE_NS goes ahead anyway: the limit shapes the
 * load, it never makes a launch wait on one that hangs (a bind source on a dead NFS
 * server, say). admit_limit 0 = no limit. Fork: the child starts with nobody
 * admitted (the other threads are not in it). */
#define ADMIT_PATIENCE_NS 1000000000LL
struct admit_waiter {
    pthread_cond_t cv;
    long long granted; /* the admission's number (admit_seq), once admitted */
    struct admit_waiter *next;
};
static pthread_mutex_t admit_mu = PTHREAD_MUTEX_INITIALIZER;
static int admit_limit = -1, admit_busy; /* -1: not set yet (admit_init) */
static struct admit_waiter *admit_head, *admit_tail;
static long long admit_stats[3]; /* launches admitted at once, after waiting, gone ahead after ADMIT_PATIENCE */
static long long admit_seq;      /* admissions so far: each one's number, in the order they were let in */
static pthread_once_t admit_once = PTHREAD_ONCE_INIT;

static void admit_prepare(void) { pthread_mutex_lock(&admit_mu); }
static void admit_parent(void) { pthread_mutex_unlock(&admit_mu); }
static void admit_child(void)
{
    pthread_mutex_init(&admit_mu, NULL);
    admit_busy = 0;
    admit_head = admit_tail = NULL;
}
static void admit_init(void)
{
    pthread_atfork(admit_prepare, admit_parent, admit_child);
    /* Enough to keep the CPUs busy while launches wait for the kernel (RCU grace periods
     * take milliseconds on a loaded machine: 8 at once on 2 CPUs lost ~12% there), few
     * enough that hundreds of threads do not all convoy in the kernel at once. */
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    pthread_mutex_lock(&admit_mu);
    if (admit_limit < 0)
        admit_limit = cpus * 8 > 16 ? cpus * 8 : 16;
    pthread_mutex_unlock(&admit_mu);
}

/* Hand free slots to the first waiters; call with admit_mu held. */
static void admit_grant(void)
{
    while (admit_head && (admit_limit <= 0 || admit_busy < admit_limit)) {
        struct admit_waiter *w = admit_head;
        admit_head = w->next;
        if (!admit_head)
            admit_tail = NULL;
        w->granted = ++admit_seq;
        admit_busy++;
        pthread_cond_signal(&w->cv);
    }
}

/* The admission's number (> 0: call admit_leave after the launch), or 0: went ahead
 * after waiting too long. */
static long long admit_enter(void)
{
    pthread_once(&admit_once, admit_init);
    pthread_mutex_lock(&admit_mu);
    if (!admit_head && (admit_limit <= 0 || admit_busy < admit_limit)) {
        admit_busy++;
        admit_stats[0]++;
        long long seq = ++admit_seq;
        pthread_mutex_unlock(&admit_mu);
        return seq;
    }
    struct admit_waiter w = {.granted = 0, .next = NULL};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (admit_tail)
        admit_tail->next = &w;
    else
        admit_head = &w;
    admit_tail = &w;
    int64_t deadline = now_ns() + ADMIT_PATIENCE_NS;
    struct timespec ts = {(time_t)(deadline / 1000000000LL), (long)(deadline % 1000000000LL)};
    while (!w.granted) {
        if (pthread_cond_timedwait(&w.cv, &admit_mu, &ts) == ETIMEDOUT && !w.granted) {
            struct admit_waiter **pp = &admit_head, *prev = NULL;
            while (*pp != &w) {
                prev = *pp;
                pp = &(*pp)->next;
            }
            *pp = w.next;
            if (admit_tail == &w)
                admit_tail = prev;
            admit_stats[2]++;
            break;
        }
    }
    long long granted = w.granted;
    if (granted)
        admit_stats[1]++;
    pthread_mutex_unlock(&admit_mu);
    pthread_cond_destroy(&w.cv);
    return granted;
}

static void admit_leave(void)
{
    pthread_mutex_lock(&admit_mu);
    admit_busy--;
    admit_grant();
    pthread_mutex_unlock(&admit_mu);
}

/* set_admission(limit) -> the previous limit (0: none). */
static PyObject *set_admission(PyObject *self, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0 || n > 65536) {
        PyErr_SetString(PyExc_ValueError, "set_admission: expected 0 (no limit) to 65536 launches at once");
        return NULL;
    }
    pthread_once(&admit_once, admit_init);
    pthread_mutex_lock(&admit_mu);
    int old = admit_limit;
    admit_limit = (int)n;
    admit_grant();
    pthread_mutex_unlock(&admit_mu);
    return PyLong_FromLong(old);
}

/* admission() -> (limit, launches in the launch path now, waiting now,
 *                 admitted at once, admitted after waiting, gone ahead after waiting too long) */
static PyObject *admission(PyObject *self, PyObject *unused)
{
    pthread_once(&admit_once, admit_init);
    pthread_mutex_lock(&admit_mu);
    int waiting = 0;
    for (struct admit_waiter *w = admit_head; w; w = w->next)
        waiting++;
    PyObject *r = Py_BuildValue("(iiiLLL)", admit_limit, admit_busy, waiting, admit_stats[0], admit_stats[1],
                                admit_stats[2]);
    pthread_mutex_unlock(&admit_mu);
    return r;
}

/* admitted_read(fd) -> the admission's number (0: went ahead without): for tests, what a
 * launch does around the launch path, with a read of one byte from fd instead of it. */
static PyObject *admitted_read(PyObject *self, PyObject *arg)
{
    int fd = (int)PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    long long seq;
    ssize_t n;
    char c;
    Py_BEGIN_ALLOW_THREADS
    seq = admit_enter();
    n = read(fd, &c, 1);
    if (seq)
        admit_leave();
    Py_END_ALLOW_THREADS
    if (n < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong(seq);
}
#endif /* ISOLATE_NO_PYTHON */

#ifndef ISOLATE_NO_PYTHON
/* launch_core in a short-lived thread of its own, for a launch from a template mount
 * namespace: setns into a mount namespace needs a thread with an fs_struct of its own
 * (unshare(CLONE_FS) copies the caller's root, cwd and umask as they are now); the
 * calling thread, whichever it is, changes nothing of its own, and the thread ends
 * after the launch, so nothing of it needs to be restored. */
struct core_call {
    struct launch *l;
    int mntns_fd, ncgroups;
    char *const *c_cgroups;
    int64_t *timings;
    struct launch_result *res;
};

static void *core_thread(void *arg)
{
    struct core_call *c = arg;
    launch_core(c->l, c->mntns_fd, c->ncgroups, c->c_cgroups, c->timings, c->res);
    return NULL;
}

static void launch_core_template(struct launch *l, int mntns_fd, int ncgroups, char *const *c_cgroups,
                                 int64_t *timings, struct launch_result *res)
{
    struct core_call c = {l, mntns_fd, ncgroups, c_cgroups, timings, res};
    pthread_t th;
    int e = pthread_create(&th, NULL, core_thread, &c);
    if (e) {
        memset(res, 0, sizeof *res);
        res->pid = -1;
        res->pidfd = res->status_fd = -1;
        res->err = e;
        res->step = STEP_CLONE;
        res->mntns_fd = -1;
        res->mntns_token = 0;
        return;
    }
    pthread_join(th, NULL);
}

/* spawn(plan, exec_paths, argv, envp, cwd, fd_src, fd_dst, init_fd, init_argv,
 *       first_private, parent_pidfd, bpf_fd[, netns_fd, cgroup_procs, cgroup_fd, mntns_fd,
 *       uid_map, gid_map, switch_uid, switch_gid, op_fds, ctty, umask, keep_ignored, groups])
 *   -> (pid, pidfd, status_fd, timings, used_clone3)
 * status_fd is the read end of the status pipe; with init it carries the program's
 * exit status later, without it the parent may close it. */
static PyObject *spawn(PyObject *self, PyObject *args)
{
    PyObject *cap, *exec_paths, *argv, *envp, *cwd, *fd_src, *fd_dst, *init_argv;
    int init_fd, first_private, parent_pidfd, bpf_fd, netns_fd = -1, cgroup_fd = -1, mntns_fd = -1;
    PyObject *cgroups = NULL, *l_uid_map = Py_None, *l_gid_map = Py_None, *op_fds = Py_None;
    long switch_uid = -1, switch_gid = -1;
    int ctty = 0, umask_ = -1, keep_ignored = 0, hold_mntns = 0;
    PyObject *groups = Py_None, *cg_move = Py_None;
    if (!PyArg_ParseTuple(args, "OOOOOOOiOiii|iOiiOOllOpipOOp", &cap, &exec_paths, &argv, &envp, &cwd, &fd_src,
                          &fd_dst, &init_fd, &init_argv, &first_private, &parent_pidfd, &bpf_fd, &netns_fd, &cgroups,
                          &cgroup_fd, &mntns_fd, &l_uid_map, &l_gid_map, &switch_uid, &switch_gid, &op_fds,
                          &ctty, &umask_, &keep_ignored, &groups, &cg_move, &hold_mntns))
        return NULL;
    /* cg_move: ((fd of the sandbox cgroup's tasks, fd of the caller's own tasks), ...): the
     * launching thread moves itself in around the clone instead of writing cgroup.procs. */
    int c_move_new[8], c_move_orig[8], nmove = 0;
    if (cg_move != Py_None) {
        PyObject *mv = PySequence_Fast(cg_move, "cg_move");
        if (!mv)
            return NULL;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(mv);
        for (Py_ssize_t i = 0; i < n && i < 8; i++) {
            int a, b;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(mv, i), "ii", &a, &b)) {
                Py_DECREF(mv);
                return NULL;
            }
            c_move_new[nmove] = a;
            c_move_orig[nmove++] = b;
        }
        Py_DECREF(mv);
        if (n > 8) {
            PyErr_SetString(PyExc_ValueError, "cg_move: at most 8 cgroups");
            return NULL;
        }
    }
    if (groups != Py_None && (!PyBytes_Check(groups) || PyBytes_GET_SIZE(groups) % 4 ||
                              PyBytes_GET_SIZE(groups) / 4 > 65536)) {
        PyErr_SetString(PyExc_TypeError, "groups: expected None or bytes of native uint32 gids");
        return NULL;
    }
    struct plan *p = PyCapsule_GetPointer(cap, "isolate.plan");
    if (!p)
        return NULL;
    if ((l_uid_map != Py_None && !PyBytes_Check(l_uid_map)) || (l_gid_map != Py_None && !PyBytes_Check(l_gid_map))) {
        PyErr_SetString(PyExc_TypeError, "uid_map/gid_map: expected bytes or None");
        return NULL;
    }
    if (p->launch_ids && (l_uid_map == Py_None || l_gid_map == Py_None || switch_uid < 0 || switch_gid < 0)) {
        /* Without them the child would stay the caller's host ids: refuse. */
        PyErr_SetString(PyExc_ValueError, "this plan maps a host id per launch: uid_map, gid_map and the ids are required");
        return NULL;
    }
    int c_op_fds[p->nops + 1];
    int have_op_fds = 0;
    for (int i = 0; i <= p->nops; i++)
        c_op_fds[i] = -1;
    if (op_fds != Py_None) {
        PyObject *of = PySequence_Fast(op_fds, "op_fds");
        if (!of)
            return NULL;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(of);
        for (Py_ssize_t i = 0; i < n && i < p->nops; i++)
            c_op_fds[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(of, i));
        Py_DECREF(of);
        if (PyErr_Occurred())
            return NULL;
        have_op_fds = 1;
    }

    PyObject *ep = NULL, *av = NULL, *ev = NULL, *iav = NULL, *fs = NULL, *fdd = NULL, *cgs = NULL, *result = NULL;
    char **c_exec = NULL, **c_argv = NULL, **c_envp = NULL, **c_init_argv = NULL, **c_cgroups = NULL;
    int ncgroups = 0;
    int *c_src = NULL, *c_dst = NULL;
    int nexec = 0, nfds = 0;
    int64_t timings[MAX_TIMINGS];
    memset(timings, 0, sizeof timings);

    if (!(ep = PySequence_Fast(exec_paths, "exec_paths")) || !(av = PySequence_Fast(argv, "argv")) ||
        !(ev = PySequence_Fast(envp, "envp")) || !(iav = PySequence_Fast(init_argv, "init_argv")) ||
        !(fs = PySequence_Fast(fd_src, "fd_src")) || !(fdd = PySequence_Fast(fd_dst, "fd_dst")))
        goto done;
    if (!(c_exec = bytes_array(ep, &nexec)) || !(c_argv = bytes_array(av, NULL)) ||
        !(c_envp = bytes_array(ev, NULL)) || !(c_init_argv = bytes_array(iav, NULL)))
        goto done;
    if (cgroups && cgroups != Py_None) {
        if (!(cgs = PySequence_Fast(cgroups, "cgroups")) || !(c_cgroups = bytes_array(cgs, &ncgroups)))
            goto done;
    }
    if (cwd != Py_None && !PyBytes_Check(cwd)) {
        PyErr_SetString(PyExc_TypeError, "cwd: expected bytes or None");
        goto done;
    }
    nfds = (int)PySequence_Fast_GET_SIZE(fs);
    if (nfds != PySequence_Fast_GET_SIZE(fdd)) {
        PyErr_SetString(PyExc_ValueError, "fd_src and fd_dst differ in length");
        goto done;
    }
    c_src = PyMem_RawCalloc((size_t)nfds + 1, sizeof(int));
    c_dst = PyMem_RawCalloc((size_t)nfds + 1, sizeof(int));
    if (!c_src || !c_dst) {
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < nfds; i++) {
        c_src[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(fs, i));
        c_dst[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(fdd, i));
    }
    if (PyErr_Occurred())
        goto done;

    struct launch l = {
        .plan = p, .exec_paths = c_exec, .nexec = nexec, .argv = c_argv, .envp = c_envp,
        .cwd = cwd == Py_None ? NULL : PyBytes_AS_STRING(cwd), .nfds = nfds, .fd_src = c_src, .fd_dst = c_dst,
        .init_fd = init_fd, .init_argv = c_init_argv, .first_private = first_private,
        .parent_pidfd = parent_pidfd, .bpf_fd = bpf_fd, .netns_fd = netns_fd,
        .cgroup_procs = c_cgroups, .ncgroups = ncgroups, .cgroup_fd = cgroup_fd, .timings = timings,
        .uid_map = l_uid_map == Py_None ? p->uid_map : PyBytes_AS_STRING(l_uid_map),
        .gid_map = l_gid_map == Py_None ? p->gid_map : PyBytes_AS_STRING(l_gid_map),
        .switch_uid = switch_uid, .switch_gid = switch_gid, .op_fds = have_op_fds ? c_op_fds : NULL,
        .ctty = ctty, .umask = umask_, .keep_ignored = keep_ignored,
        .ngroups = groups == Py_None ? -1 : (int)(PyBytes_GET_SIZE(groups) / 4),
        .groups = groups == Py_None ? NULL : (const uint32_t *)PyBytes_AS_STRING(groups),
        .ncg_move = nmove == ncgroups ? nmove : 0, .cg_move_new = c_move_new, .cg_move_orig = c_move_orig,
        .hold_mntns = hold_mntns,
    };

    struct launch_result res;
    Py_BEGIN_ALLOW_THREADS
    long long admitted = admit_enter();
    if (mntns_fd >= 0)
        launch_core_template(&l, mntns_fd, ncgroups, c_cgroups, timings, &res);
    else
        launch_core(&l, mntns_fd, ncgroups, c_cgroups, timings, &res);
    if (admitted)
        admit_leave();
    Py_END_ALLOW_THREADS
    long pid = res.pid;
    int pidfd = res.pidfd, status_fd = res.status_fd, used_clone3 = res.used_clone3;
    int64_t t_start = res.t_start, t_end = res.t_end;
    if (res.err) {
        const char *name = (res.step >= 0 && res.step < STEP__COUNT) ? step_names[res.step] : "unknown";
        PyObject *e = Py_BuildValue("(siii)", name, res.index, res.err, used_clone3);
        if (e) {
            PyErr_SetObject(ChildError, e);
            Py_DECREF(e);
        }
        goto done;
    }
    PyObject *tl = PyList_New(0);
    if (!tl)
        goto done;
    PyObject *item = Py_BuildValue("(sL)", "start", (long long)t_start);
    PyList_Append(tl, item);
    Py_XDECREF(item);
    for (int i = 0; i < MAX_TIMINGS; i++) {
        if (!timings[i])
            continue;
        item = Py_BuildValue("(sL)", i < STEP__COUNT ? step_names[i] : "?", (long long)timings[i]);
        PyList_Append(tl, item);
        Py_XDECREF(item);
    }
    item = Py_BuildValue("(sL)", "returned", (long long)t_end);
    PyList_Append(tl, item);
    Py_XDECREF(item);
    if (hold_mntns && res.mntns_token > 0) /* a token >= 2**32 stands for the held namespace */
        result = Py_BuildValue("(liiNiL)", pid, pidfd, status_fd, tl, used_clone3, res.mntns_token);
    else if (hold_mntns)
        result = Py_BuildValue("(liiNii)", pid, pidfd, status_fd, tl, used_clone3, res.mntns_fd);
    else
        result = Py_BuildValue("(liiNi)", pid, pidfd, status_fd, tl, used_clone3);
    if (!result && res.mntns_fd >= 0)
        close(res.mntns_fd);
    if (!result && res.mntns_token > 0)
        hold_release(res.mntns_token);

done:
    Py_XDECREF(ep);
    Py_XDECREF(av);
    Py_XDECREF(ev);
    Py_XDECREF(iav);
    Py_XDECREF(fs);
    Py_XDECREF(fdd);
    Py_XDECREF(cgs);
    PyMem_RawFree(c_cgroups);
    PyMem_RawFree(c_exec);
    PyMem_RawFree(c_argv);
    PyMem_RawFree(c_envp);
    PyMem_RawFree(c_init_argv);
    PyMem_RawFree(c_src);
    PyMem_RawFree(c_dst);
    return result;
}

#endif /* ISOLATE_NO_PYTHON */

#ifndef ISOLATE_NO_PYTHON
/* ---- closing the namespaces a launch held, off the caller's path -----------------
 *
 * The last close of a mount namespace tears it down: every mount of the view is
 * unmounted, and the kernel waits for an RCU grace period before it frees them. A
 * launch that held its sandbox's namespace (hold_mntns) hands the fd here once the
 * sandbox was reaped; one thread of ours closes it. At most DEFER_MAX wait: beyond,
 * defer_close closes at once (the caller pays, as without). Fork-safe: the prepare
 * handler waits until no close is in flight, so the child's pending fds are exactly
 * the copies of the queued ones, which it closes. */
#define DEFER_MAX 128
static pthread_mutex_t defer_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t defer_cv = PTHREAD_COND_INITIALIZER;
static int defer_fds[DEFER_MAX];
static int defer_n, defer_busy, defer_up, defer_atfork;

static void *defer_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&defer_mu);
    for (;;) {
        while (!defer_n)
            pthread_cond_wait(&defer_cv, &defer_mu);
        int fd = defer_fds[--defer_n];
        defer_busy = 1;
        pthread_mutex_unlock(&defer_mu);
        close(fd);
        pthread_mutex_lock(&defer_mu);
        defer_busy = 0;
        pthread_cond_broadcast(&defer_cv); /* drain_deferred and the fork handler wait for this */
    }
    return NULL;
}

static void defer_prepare(void)
{
    pthread_mutex_lock(&defer_mu);
    while (defer_busy)
        pthread_cond_wait(&defer_cv, &defer_mu);
}

static void defer_parent(void)
{
    pthread_mutex_unlock(&defer_mu);
}

static void defer_child(void)
{
    /* Only this thread exists now: the queued fds are our copies, closed here. */
    for (int i = 0; i < defer_n; i++)
        close(defer_fds[i]);
    defer_n = defer_busy = defer_up = 0;
    pthread_mutex_init(&defer_mu, NULL);
    pthread_cond_init(&defer_cv, NULL);
}

/* Starts the thread if needed; call with defer_mu held. 0 or an errno. */
static int defer_start(void)
{
    if (defer_up)
        return 0;
    if (!defer_atfork) {
        if (pthread_atfork(defer_prepare, defer_parent, defer_child))
            return ENOMEM;
        defer_atfork = 1;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* no signal is ever delivered to it */
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 * 1024);
    pthread_t th;
    int e = pthread_create(&th, &at, defer_main, NULL);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!e)
        defer_up = 1;
    return e;
}

/* ---- the holding thread: held namespaces outside the process's fd table ------------
 *
 * A held namespace's fd in the process's fd table is copied into every child that
 * another launch clones meanwhile (clone copies the table; the child closes its copies
 * in its fds step). When the closing thread's close is not the last, the last copy's
 * close tears the namespace down there: in another sandbox's setup, before its program
 * may run (a perf trace of two launching threads found it in a third of the launches).
 * So launch_core hands the fd, right after the ioctl, to a thread with an fd table of
 * its own (unshare(CLONE_FILES)) over a SOCK_SEQPACKET socketpair (SCM_RIGHTS; the
 * caller's copy is closed at once), and gets a token (>= 2**32, never an fd number);
 * releasing the token closes it there. The thread keeps in the process's table only
 * the sending end (hold_tx, checked by inode before each use: the caller may have
 * closed that number and opened something else on it). Anything that does not work
 * (no thread, the socket full or gone) leaves the fd where it was, as before.
 * Fork: the child closes its copy of hold_tx; its own thread starts when needed. */
#define HOLD_BASE (1LL << 32)
struct hold_msg {
    long long token;
    int release;
};
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER; /* the thread's state and hold_tx; never held
                                                                * across a wait for the thread */
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t pend_mu = PTHREAD_MUTEX_INITIALIZER;  /* hold_pending; the thread takes only this one */
static pthread_cond_t pend_cv = PTHREAD_COND_INITIALIZER;
static int hold_tx = -1, hold_state, hold_atfork; /* hold_state: 0 not started, 1 running, -1 cannot */
static dev_t hold_dev;
static ino_t hold_ino;
static long long hold_next = HOLD_BASE, hold_pending;
static long long hold_given, hold_refused; /* fds handed to the thread; left with the caller (see hold_give) */
static int hold_off; /* set_holding(False): every held fd stays with the caller (for side-by-side measurements) */
static pid_t hold_tid;

/* The closes themselves run in HOLD_WORKERS threads that share the holding thread's fd
 * table: a teardown waits for an RCU grace period (milliseconds on a loaded machine),
 * and closes that run at once share one (one thread closing one after the other was
 * slower than 32 launching threads, and each close was a grace period of its own that
 * the launches' children waited behind). */
#define HOLD_WORKERS 4
static pthread_mutex_t work_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static int *work_fds, work_n, work_cap;

static void hold_done(void)
{
    pthread_mutex_lock(&pend_mu);
    hold_pending--;
    pthread_cond_broadcast(&pend_cv);
    pthread_mutex_unlock(&pend_mu);
}

static void *work_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&work_mu);
    for (;;) {
        while (!work_n)
            pthread_cond_wait(&work_cv, &work_mu);
        int fd = work_fds[--work_n];
        pthread_mutex_unlock(&work_mu);
        close(fd); /* the teardown: here, off every launch's path */
        hold_done();
        pthread_mutex_lock(&work_mu);
    }
    return NULL;
}

/* Queue a close for the workers; 0 when it cannot be queued (then close it yourself). */
static int work_push(int fd, int workers)
{
    if (!workers)
        return 0;
    pthread_mutex_lock(&work_mu);
    if (work_n == work_cap) {
        int ncap = work_cap ? work_cap * 2 : 64;
        int *nw = realloc(work_fds, ncap * sizeof *nw);
        if (!nw) {
            pthread_mutex_unlock(&work_mu);
            return 0;
        }
        work_fds = nw;
        work_cap = ncap;
    }
    work_fds[work_n++] = fd;
    pthread_cond_signal(&work_cv);
    pthread_mutex_unlock(&work_mu);
    return 1;
}

/* Close every fd of this thread's table but `keep` (close_range, else one by one). */
static void hold_close_others(int keep)
{
    if ((keep == 0 || syscall(SYS_close_range, 0, keep - 1, 0) == 0) &&
        syscall(SYS_close_range, keep + 1, ~0U, 0) == 0)
        return;
    struct rlimit rl;
    long top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 1L << 20;
    for (;;) { /* a kernel without close_range: what /proc lists, else every number below the limit */
        DIR *d = opendir("/proc/thread-self/fd");
        if (!d)
            break;
        int dfd = dirfd(d), closed = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            char *end;
            long fd = strtol(e->d_name, &end, 10);
            if (*end || end == e->d_name || fd == keep || fd == dfd)
                continue;
            closed += close((int)fd) == 0;
        }
        closedir(d);
        if (!closed)
            return;
    }
    for (long fd = 0; fd < top; fd++)
        if (fd != keep)
            close((int)fd);
}

static void *hold_main(void *arg)
{
    int rx = (int)(intptr_t)arg;
    int ok = syscall(SYS_unshare, CLONE_FILES) == 0;
    if (ok) /* the copy of the process's table: only rx stays (a caller's pipe must reach EOF) */
        hold_close_others(rx);
    pthread_mutex_lock(&hold_mu);
    hold_tid = (pid_t)syscall(SYS_gettid);
    hold_state = ok ? 1 : -1;
    pthread_cond_broadcast(&hold_cv);
    pthread_mutex_unlock(&hold_mu);
    if (!ok)
        return NULL;
    int workers = 0;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 * 1024);
    for (int i = 0; i < HOLD_WORKERS; i++) { /* (they share this thread's fd table; signals blocked) */
        pthread_t th;
        workers += pthread_create(&th, &at, work_main, NULL) == 0;
    }
    pthread_attr_destroy(&at);
    long long *tokens = NULL;
    int *fds = NULL, n = 0, cap = 0;
    for (;;) {
        struct hold_msg m;
        char cbuf[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {&m, sizeof m};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
        ssize_t got = recvmsg(rx, &mh, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* every sending end is closed: nothing more can come */
        int fd = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&fd, CMSG_DATA(c), sizeof fd);
        if (got != (ssize_t)sizeof m) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        if (!m.release) {
            if (fd < 0)
                continue; /* not received (MSG_CTRUNC: no fd free here): dropped already */
            if (n == cap) {
                int ncap = cap ? cap * 2 : 64;
                long long *nt = realloc(tokens, ncap * sizeof *nt);
                if (nt)
                    tokens = nt;
                int *nf = nt ? realloc(fds, ncap * sizeof *nf) : NULL;
                if (!nt || !nf) {
                    close(fd); /* cannot keep it: its teardown happens now, here */
                    continue;
                }
                fds = nf;
                cap = ncap;
            }
            tokens[n] = m.token;
            fds[n++] = fd;
            continue;
        }
        if (fd >= 0)
            close(fd);
        int found = -1;
        for (int i = n - 1; i >= 0 && found < 0; i--)
            if (tokens[i] == m.token) {
                found = fds[i];
                tokens[i] = tokens[n - 1];
                fds[i] = fds[--n];
            }
        if (found >= 0 && work_push(found, workers))
            continue; /* hold_done once a worker has closed it */
        if (found >= 0)
            close(found);
        hold_done();
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(tokens);
    free(fds);
    close(rx);
    pthread_mutex_lock(&pend_mu);
    hold_pending = 0;
    pthread_cond_broadcast(&pend_cv);
    pthread_mutex_unlock(&pend_mu);
    return NULL;
}

static void hold_prepare(void) { pthread_mutex_lock(&hold_mu); }
static void hold_parent(void) { pthread_mutex_unlock(&hold_mu); }
static void hold_child(void)
{
    if (hold_tx >= 0)
        close(hold_tx);
    hold_tx = -1;
    hold_state = 0;
    hold_pending = 0;
    hold_tid = 0;
    work_n = 0; /* (the workers were threads of the parent: their queue is not ours) */
    pthread_mutex_init(&work_mu, NULL);
    pthread_cond_init(&work_cv, NULL);
    pthread_mutex_init(&hold_mu, NULL);
    pthread_cond_init(&hold_cv, NULL);
    pthread_mutex_init(&pend_mu, NULL);
    pthread_cond_init(&pend_cv, NULL);
}

/* hold_tx checked to be our socket still; call with hold_mu held. */
static int hold_tx_ours(void)
{
    struct stat st;
    return hold_tx >= 0 && fstat(hold_tx, &st) == 0 && st.st_dev == hold_dev && st.st_ino == hold_ino;
}

/* Start the thread if needed; call with hold_mu held. 1 when it runs. */
static int hold_start(void)
{
    if (hold_state == 1 && hold_tx_ours())
        return 1;
    if (hold_state == -1)
        return 0;
    if (hold_state == 1)
        return 0; /* hold_tx is not ours any more: the thread ends once its other copies go */
    if (!hold_atfork) {
        if (pthread_atfork(hold_prepare, hold_parent, hold_child))
            return 0;
        hold_atfork = 1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    int tx = fcntl(sv[0], F_DUPFD_CLOEXEC, 3); /* above 0-2, as the other fds the caller keeps */
    close(sv[0]);
    int room = 4 << 20; /* a burst of holds while the thread waits for the CPU (else: left with the caller) */
    if (tx >= 0 && setsockopt(tx, SOL_SOCKET, SO_SNDBUFFORCE, &room, sizeof room) < 0)
        setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &room, sizeof room);
    struct stat st;
    if (tx < 0 || fstat(tx, &st) < 0) {
        if (tx >= 0)
            close(tx);
        close(sv[1]);
        return 0;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 64 * 1024);
    pthread_t th;
    hold_state = 0;
    int e = pthread_create(&th, &at, hold_main, (void *)(intptr_t)sv[1]);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        close(tx);
        close(sv[1]);
        return 0;
    }
    while (hold_state == 0)
        pthread_cond_wait(&hold_cv, &hold_mu);
    close(sv[1]); /* the thread has its own copy now (or failed and closed its table's) */
    if (hold_state != 1) {
        close(tx);
        return 0;
    }
    hold_dev = st.st_dev;
    hold_ino = st.st_ino;
    __atomic_store_n(&hold_tx, tx, __ATOMIC_RELEASE); /* (published last: hold_give reads it first) */
    return 1;
}

/* Send one HOLD of fd with `token`; 1 when the message is queued. */
static int hold_send(int tx, long long token, int fd)
{
    struct hold_msg m = {token, 0};
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {&m, sizeof m};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(tx, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof m;
}

/* Hand a held namespace's fd to the holding thread: its token (the fd is closed here),
 * or 0 (nothing changed: the fd stays the caller's). No GIL needed. Once the thread
 * runs, no lock is taken: the time the fd spends in the process's table (where a
 * child another launch clones now would copy it) is the ioctl, this send and the
 * close; messages of one socket keep their order, and a token's release is sent only
 * after this returned. */
static long long hold_give(int fd)
{
    long long token = 0;
    int tx = __atomic_load_n(&hold_tx, __ATOMIC_ACQUIRE);
    struct stat st;
    if (__atomic_load_n(&hold_off, __ATOMIC_RELAXED)) {
    } else if (tx >= 0 && __atomic_load_n(&hold_state, __ATOMIC_ACQUIRE) == 1 && fstat(tx, &st) == 0 &&
        st.st_dev == hold_dev && st.st_ino == hold_ino) {
        long long t = __atomic_fetch_add(&hold_next, 1, __ATOMIC_RELAXED);
        if (hold_send(tx, t, fd))
            token = t;
    } else {
        pthread_mutex_lock(&hold_mu);
        if (hold_start()) {
            long long t = __atomic_fetch_add(&hold_next, 1, __ATOMIC_RELAXED);
            if (hold_send(hold_tx, t, fd))
                token = t;
        }
        pthread_mutex_unlock(&hold_mu);
    }
    __atomic_fetch_add(token ? &hold_given : &hold_refused, 1, __ATOMIC_RELAXED);
    if (token)
        close(fd); /* the message holds it now: not the last reference */
    return token;
}

/* Close a held namespace in the holding thread. No GIL needed (it may wait for room
 * in the socket, without holding hold_mu: the thread never waits for that lock). */
static void hold_release(long long token)
{
    struct hold_msg m = {token, 1};
    pthread_mutex_lock(&pend_mu);
    hold_pending++;
    pthread_mutex_unlock(&pend_mu);
    for (;;) {
        pthread_mutex_lock(&hold_mu);
        int tx = hold_state == 1 && hold_tx_ours() ? hold_tx : -1;
        ssize_t r = tx < 0 ? -1 : send(tx, &m, sizeof m, MSG_DONTWAIT | MSG_NOSIGNAL);
        int e = errno;
        pthread_mutex_unlock(&hold_mu);
        if (r == (ssize_t)sizeof m)
            return;
        if (tx >= 0 && (e == EAGAIN || e == EINTR)) { /* full: the thread is closing; wait for room */
            struct pollfd pfd = {tx, POLLOUT, 0};
            poll(&pfd, 1, 20);
            continue;
        }
        break; /* the thread is gone (it closed what it held), or this fd is not its socket now */
    }
    pthread_mutex_lock(&pend_mu);
    hold_pending--;
    pthread_cond_broadcast(&pend_cv);
    pthread_mutex_unlock(&pend_mu);
}

/* closer_tid() -> the thread id of the holding thread (0: not running), for tests:
 * /proc/self/task/TID/fd lists the namespaces it holds. */
static PyObject *closer_tid(PyObject *self, PyObject *unused)
{
    pthread_mutex_lock(&hold_mu);
    long tid = hold_state == 1 ? (long)hold_tid : 0;
    pthread_mutex_unlock(&hold_mu);
    return PyLong_FromLong(tid);
}

/* closer_stats() -> (namespaces handed to the holding thread, left with the caller because
 * it could not take them, releases not closed yet). */
static PyObject *closer_stats(PyObject *self, PyObject *unused)
{
    long long given = __atomic_load_n(&hold_given, __ATOMIC_RELAXED);
    long long refused = __atomic_load_n(&hold_refused, __ATOMIC_RELAXED);
    pthread_mutex_lock(&pend_mu);
    long long pending = hold_pending;
    pthread_mutex_unlock(&pend_mu);
    return Py_BuildValue("(LLL)", given, refused, pending);
}

/* set_holding(on) -> whether it was on: off, launches keep their held namespace's fd in
 * the process's table as before the holding thread (to measure one against the other). */
static PyObject *set_holding(PyObject *self, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    int was = !__atomic_exchange_n(&hold_off, !on, __ATOMIC_RELAXED);
    return PyBool_FromLong(was);
}

/* closer_fds() -> the fds the holding thread keeps in the process's table (its socket). */
static PyObject *closer_fds(PyObject *self, PyObject *unused)
{
    pthread_mutex_lock(&hold_mu);
    PyObject *r = hold_state == 1 && hold_tx_ours() ? Py_BuildValue("[i]", hold_tx) : PyList_New(0);
    pthread_mutex_unlock(&hold_mu);
    return r;
}

/* defer_close(fd): close fd in the closing thread (now, here, when it is full). */
static PyObject *defer_close(PyObject *self, PyObject *arg)
{
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (v >= HOLD_BASE) { /* a token: the namespace is in the holding thread */
        Py_BEGIN_ALLOW_THREADS
        hold_release(v);
        Py_END_ALLOW_THREADS
        Py_RETURN_NONE;
    }
    int fd = (int)v;
    if (fd < 0 || v > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "defer_close: expected an open fd");
        return NULL;
    }
    int queued = 0;
    pthread_mutex_lock(&defer_mu);
    if (defer_n < DEFER_MAX && defer_start() == 0) {
        defer_fds[defer_n++] = fd;
        queued = 1;
        pthread_cond_signal(&defer_cv);
    }
    pthread_mutex_unlock(&defer_mu);
    if (!queued) {
        Py_BEGIN_ALLOW_THREADS
        close(fd);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

/* deferred() -> the number of fds queued or being closed. */
static PyObject *deferred(PyObject *self, PyObject *unused)
{
    pthread_mutex_lock(&defer_mu);
    long long n = defer_n + defer_busy;
    pthread_mutex_unlock(&defer_mu);
    pthread_mutex_lock(&pend_mu);
    n += hold_pending;
    pthread_mutex_unlock(&pend_mu);
    return PyLong_FromLongLong(n);
}

/* drain_deferred(): returns once every queued fd is closed. */
static PyObject *drain_deferred(PyObject *self, PyObject *unused)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&defer_mu);
    while (defer_n || defer_busy)
        pthread_cond_wait(&defer_cv, &defer_mu);
    pthread_mutex_unlock(&defer_mu);
    pthread_mutex_lock(&pend_mu);
    while (hold_pending > 0)
        pthread_cond_wait(&pend_cv, &pend_mu);
    pthread_mutex_unlock(&pend_mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
#endif /* ISOLATE_NO_PYTHON */

/* make_userns(uid_map, gid_map) -> fd of a new user namespace with these maps (for
 * idmapped mounts: nothing runs in it). A child is cloned into it only to write the
 * maps and open it; it waits on a pipe, doing nothing but raw system calls. */
static int userns_child(void *arg)
{
    int fd = *(int *)arg;
    char b;
    rsys3(SYS_read, fd, &b, 1);
    return 0;
}

/* The user namespace itself: its fd, or -errno. */
__attribute__((unused)) static int userns_make(const char *uid_map, const char *gid_map)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    size_t size = 64 * 1024;
    void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        return -e;
    }
    int err = 0, fd = -1;
    int rfd = pfd[0];
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* CLONE_VM|CLONE_FILES: the child shares our memory and fd table; it only reads. */
    int pid = clone(userns_child, (char *)stack + size, CLONE_NEWUSER | CLONE_VM | CLONE_FILES | SIGCHLD, &rfd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        err = errno;
    } else {
        int r = write_proc_file(pid, "uid_map", uid_map);
        if (!r)
            r = write_proc_file(pid, "setgroups", "deny");
        if (!r)
            r = write_proc_file(pid, "gid_map", gid_map);
        if (!r) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                r = -errno;
        }
        err = -r;
        close(pfd[1]);
        pfd[1] = -1;
        while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
    }
    munmap(stack, size);
    close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    if (err) {
        if (fd >= 0)
            close(fd);
        return -err;
    }
    return fd;
}

/* A detached, private (and with userns_fd >= 0, idmapped) clone of the tree at path: fd or -errno. */
static int tree_detach(const char *path, int userns_fd)
{
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0)
        return -errno;
    /* Private, always: a clone of a shared host mount joins its peer group, and what the
     * child then mounts on it (a hidden path's tmpfs) would propagate back to the host. */
    struct mount_attr attr = {userns_fd >= 0 ? MOUNT_ATTR_IDMAP : 0, 0, MS_PRIVATE,
                              userns_fd >= 0 ? (uint64_t)userns_fd : 0};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

#ifndef ISOLATE_NO_PYTHON
static PyObject *make_userns(PyObject *self, PyObject *args)
{
    const char *uid_map, *gid_map;
    if (!PyArg_ParseTuple(args, "yy", &uid_map, &gid_map))
        return NULL;
    int fd;
    Py_BEGIN_ALLOW_THREADS
    fd = userns_make(uid_map, gid_map);
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        errno = -fd;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

/* detached_tree(path, userns_fd) -> fd: a recursive clone of the mount tree at path
 * (open_tree(OPEN_TREE_CLONE)), made private and idmapped through userns_fd unless
 * it is -1. The launch child attaches it with move_mount. OSError where the
 * filesystem refuses. */
static PyObject *detached_tree(PyObject *self, PyObject *args)
{
    const char *path;
    int userns_fd;
    if (!PyArg_ParseTuple(args, "yi", &path, &userns_fd))
        return NULL;
    int fd;
    /* Without the GIL: open_tree waits for namespace_sem, which the children of other
     * launches hold for their mount steps (4.4 ms per wait with 32 threads, the GIL
     * held and every other Python thread stopped meanwhile). */
    Py_BEGIN_ALLOW_THREADS
    fd = tree_detach(path, userns_fd);
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        errno = -fd;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    }
    return PyLong_FromLong(fd);
}

/* plan_bytes(plan) -> bytes: the plan as the native command reads it (_plancache.h). */
static PyObject *plan_bytes(PyObject *self, PyObject *cap)
{
    struct plan *p = PyCapsule_GetPointer(cap, "isolate.plan");
    if (!p)
        return NULL;
    struct pc_buf b = {NULL, 0, 0, 0};
    if (plan_serialize(p, &b) < 0) {
        free(b.p);
        PyErr_SetString(PyExc_ValueError, "this plan cannot be stored (it holds an fd of this process)");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)b.p, (Py_ssize_t)b.len);
    free(b.p);
    return out;
}

/* plan_check(data) -> bool: data parses as a plan and writes back to the same bytes (tests). */
static PyObject *plan_check(PyObject *self, PyObject *arg)
{
    char *s;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &s, &n) < 0)
        return NULL;
    struct plan p;
    int ok = plan_parse((const unsigned char *)s, (size_t)n, &p) == 0;
    if (ok) {
        struct pc_buf b = {NULL, 0, 0, 0};
        ok = plan_serialize(&p, &b) == 0 && b.len == (size_t)n && memcmp(b.p, s, (size_t)n) == 0;
        free(b.p);
    }
    free(p.ops);
    free(p.ll_rules);
    return PyBool_FromLong(ok);
}

static PyObject *set_force_legacy_clone(PyObject *self, PyObject *arg)
{
    force_legacy_clone = PyObject_IsTrue(arg);
    Py_RETURN_NONE;
}

static PyObject *monotonic_ns(PyObject *self, PyObject *unused)
{
    return PyLong_FromLongLong(now_ns());
}

static PyMethodDef methods[] = {
    {"make_plan", (PyCFunction)(void (*)(void))make_plan, METH_VARARGS | METH_KEYWORDS,
     "Turn compiled profile fields into a plan capsule."},
    {"spawn", spawn, METH_VARARGS, "Start one sandbox from a plan."},
    {"defer_close", defer_close, METH_O, "Close an fd in the closing thread (held namespaces)."},
    {"deferred", deferred, METH_NOARGS, "How many fds wait to be closed by the closing thread."},
    {"closer_tid", closer_tid, METH_NOARGS, "The thread id of the thread holding namespaces (0: none)."},
    {"closer_fds", closer_fds, METH_NOARGS, "The fds that thread keeps in the process's table."},
    {"closer_stats", closer_stats, METH_NOARGS, "Namespaces given to that thread, left with the caller, pending."},
    {"set_holding", set_holding, METH_O, "Off: held namespaces stay in the process's fd table (measurements)."},
    {"drain_deferred", drain_deferred, METH_NOARGS, "Wait until the closing thread has closed every fd."},
    {"set_admission", set_admission, METH_O, "At most this many launches in the launch path at once (0: no limit)."},
    {"admission", admission, METH_NOARGS, "The admission limit, launches in the path and waiting, and counts."},
    {"admitted_read", admitted_read, METH_O, "For tests: read a byte from fd as if it were a launch (admitted)."},
    {"make_userns", make_userns, METH_VARARGS, "A user namespace with these maps, as an fd."},
    {"detached_tree", detached_tree, METH_VARARGS, "open_tree(OPEN_TREE_CLONE) of a path, idmapped."},
    {"set_force_legacy_clone", set_force_legacy_clone, METH_O, "Use clone instead of clone3 (for tests)."},
    {"monotonic_ns", monotonic_ns, METH_NOARGS, "CLOCK_MONOTONIC in ns, the clock of the timings."},
    {"plan_bytes", plan_bytes, METH_O, "A plan as the plan cache stores it."},
    {"plan_check", plan_check, METH_O, "Whether bytes parse as a stored plan (and write back the same)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "isolate.launch._launch", NULL, -1, methods};

PyMODINIT_FUNC PyInit__launch(void)
{
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    ChildError = PyErr_NewException("isolate.launch._launch.ChildError", NULL, NULL);
    if (!ChildError || PyModule_AddObject(m, "ChildError", ChildError) < 0)
        return NULL;
    Py_INCREF(ChildError);
    PyModule_AddIntConstant(m, "OP_MOUNT", OP_MOUNT);
    PyModule_AddIntConstant(m, "OP_MKDIR", OP_MKDIR);
    PyModule_AddIntConstant(m, "OP_SYMLINK", OP_SYMLINK);
    PyModule_AddIntConstant(m, "OP_WRITE", OP_WRITE);
    PyModule_AddIntConstant(m, "OP_BIND", OP_BIND);
    PyModule_AddIntConstant(m, "OP_PIVOT", OP_PIVOT);
    PyModule_AddIntConstant(m, "OP_REMOUNT", OP_REMOUNT);
    PyModule_AddIntConstant(m, "OP_CHMOD", OP_CHMOD);
    PyModule_AddIntConstant(m, "OP_UMOUNT", OP_UMOUNT);
    PyModule_AddIntConstant(m, "BIND_READONLY", BIND_READONLY);
    PyModule_AddIntConstant(m, "BIND_OPTIONAL", BIND_OPTIONAL);
    PyModule_AddIntConstant(m, "BIND_DEV", BIND_DEV);
    PyModule_AddIntConstant(m, "BIND_NOEXEC", BIND_NOEXEC);
    PyModule_AddIntConstant(m, "BIND_ASIS", BIND_ASIS);
    PyModule_AddIntConstant(m, "MP_THERE", MP_THERE);
    PyModule_AddIntConstant(m, "MSG_ERROR", MSG_ERROR);
    PyModule_AddIntConstant(m, "MSG_STARTED", MSG_STARTED);
    PyModule_AddIntConstant(m, "MSG_EXITED", MSG_EXITED);
    PyModule_AddIntConstant(m, "MSG_TIMING", MSG_TIMING);
    PyModule_AddIntConstant(m, "MSG_SIZE", sizeof(struct isolate_msg));
    PyModule_AddStringConstant(m, "BUILD_ID", ISOLATE_BUILD_ID);
    PyModule_AddIntConstant(m, "PC_VERSION", PC_VERSION);
    PyModule_AddIntConstant(m, "PC_LAUNCH_SIZE", sizeof(struct pc_launch));
    return m;
}
#endif /* ISOLATE_NO_PYTHON */
