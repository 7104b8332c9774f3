/* The launch floor: what the kernel itself needs to start a program in each isolation
 * configuration, with no launcher around it.
 *
 * Built by benchmarks/floor.py as a shared library and called through ctypes from the
 * same round-robin that times isolate, so that every isolate figure has its floor
 * measured side by side. Each call is one launch:
 *
 *   clone(CLONE_VM | CLONE_VFORK | SIGCHLD | the configuration's namespaces) on a stack
 *   made once, the child doing only the configuration's steps, then execve; the parent
 *   waits for the exit.
 *
 * Configuration bits (cumulative in benchmarks/floor.py, but each one separate here):
 *   FLOOR_NS         user, pid, ipc, uts and mount namespaces; the child writes its own
 *                    one-line uid and gid maps (the cheapest map the kernel allows)
 *   FLOOR_NETNS_POOL a network namespace prepared once (loopback up), joined by the
 *                    calling thread around the clone (setns in, clone, setns back)
 *   FLOOR_NETNS_NEW  a fresh network namespace per launch, loopback brought up inside
 *   FLOOR_VIEW       tmpfs root, read-only bind of /usr (+ the program if outside /usr),
 *                    merged-/usr symlinks, /proc, pivot_root, old root detached
 *   FLOOR_SECCOMP    no_new_privs + the BPF filter floor_set_filter() put in slot
 *                    FLOOR_SLOT(cfg) (bits 8-9 of cfg)
 *   FLOOR_LANDLOCK   a Landlock ruleset: /usr (and the program) read+execute, nothing else
 *
 * Not thread-safe (one stack): the benchmark calls it from one thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define FLOOR_NS 1
#define FLOOR_NETNS_POOL 2
#define FLOOR_NETNS_NEW 4
#define FLOOR_VIEW 8
#define FLOOR_SECCOMP 16
#define FLOOR_LANDLOCK 32
#define FLOOR_SLOT(cfg) (((cfg) >> 8) & (FILTER_SLOTS - 1))

#define STACK_SIZE (1 << 20)
#define ROOT "/tmp"   /* in the child's own mount namespace: the new root's mount point */

static char *stack;
static int pool_netns = -1, own_netns = -1;
#define FILTER_SLOTS 4
static struct sock_filter *filters[FILTER_SLOTS];
static unsigned short filter_lens[FILTER_SLOTS];
static uid_t outer_uid;
static gid_t outer_gid;

struct job {
    int cfg;
    const char *prog;
    char *const *argv;
    char *const *envp;
    int err_fd;       /* the child writes errno here if a step fails */
};

static int write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, data, strlen(data));
    close(fd);
    return n == (ssize_t)strlen(data) ? 0 : -1;
}

static int lo_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
    return rc;
}

static int mkdirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return 0;
}

static int view(const char *prog)
{
    char path[4096], src[64];
    int outside = strncmp(prog, "/usr/", 5) != 0 && strncmp(prog, "/bin/", 5) != 0;
    int prog_fd = -1;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return -1;
    /* The program, held before the new root's tmpfs covers ROOT (it may live below it). */
    if (outside && (prog_fd = open(prog, O_PATH | O_CLOEXEC)) < 0)
        return -1;
    snprintf(src, sizeof src, "/proc/self/fd/%d", prog_fd);
    if (mount("tmpfs", ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
        return -1;
    if (mkdir(ROOT "/usr", 0755) < 0 || mount("/usr", ROOT "/usr", NULL, MS_BIND | MS_REC, NULL) < 0 ||
        mount(NULL, ROOT "/usr", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        return -1;
    static const char *links[][2] = {{"usr/bin", ROOT "/bin"}, {"usr/lib", ROOT "/lib"},
                                     {"usr/lib64", ROOT "/lib64"}, {"usr/sbin", ROOT "/sbin"}};
    for (unsigned i = 0; i < sizeof links / sizeof links[0]; i++) {
        snprintf(path, sizeof path, "/%s", links[i][0]);
        if (access(path, F_OK) == 0 && symlink(links[i][0], links[i][1]) < 0)
            return -1;
    }
    if (outside) {
        snprintf(path, sizeof path, ROOT "%s", prog);
        int fd;
        if (mkdirs(path) < 0 || (fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)) < 0)
            return -1;
        close(fd);
        int rc = mount(src, path, NULL, MS_BIND, NULL);
        close(prog_fd);
        if (rc < 0 ||
            mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
            return -1;
    }
    if (mkdir(ROOT "/proc", 0555) < 0 ||
        mount("proc", ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return -1;
    if (chdir(ROOT) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return -1;
    return 0;
}

static int landlock_rule(int ruleset, const char *path, uint64_t access)
{
    struct landlock_path_beneath_attr pb = {.allowed_access = access};
    pb.parent_fd = open(path, O_PATH | O_CLOEXEC);
    if (pb.parent_fd < 0)
        return -1;
    long rc = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
    close(pb.parent_fd);
    return rc < 0 ? -1 : 0;
}

static int landlock(const char *prog)
{
    const uint64_t rx = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
    struct landlock_ruleset_attr attr = {
        .handled_access_fs = rx | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                             LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                             LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                             LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
                             LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM,
    };
    int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (rs < 0)
        return -1;
    int rc = landlock_rule(rs, "/usr", rx);
    if (rc == 0 && strncmp(prog, "/usr/", 5) != 0)
        rc = landlock_rule(rs, prog, LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE);
    if (rc == 0)
        rc = syscall(SYS_landlock_restrict_self, rs, 0) < 0 ? -1 : 0;
    close(rs);
    return rc;
}

static int child(void *arg)
{
    const struct job *j = arg;
    char map[64];
    if (j->cfg & FLOOR_NS) {
        snprintf(map, sizeof map, "0 %u 1\n", (unsigned)outer_uid);
        if (write_file("/proc/self/uid_map", map) < 0)
            goto fail;
        if (write_file("/proc/self/setgroups", "deny") < 0)
            goto fail;
        snprintf(map, sizeof map, "0 %u 1\n", (unsigned)outer_gid);
        if (write_file("/proc/self/gid_map", map) < 0)
            goto fail;
    }
    if ((j->cfg & FLOOR_NETNS_NEW) && lo_up() < 0)
        goto fail;
    if ((j->cfg & FLOOR_VIEW) && view(j->prog) < 0)
        goto fail;
    if ((j->cfg & FLOOR_LANDLOCK) && landlock(j->prog) < 0)
        goto fail;
    if (j->cfg & FLOOR_SECCOMP) {
        struct sock_fprog fp = {.len = filter_lens[FLOOR_SLOT(j->cfg)], .filter = filters[FLOOR_SLOT(j->cfg)]};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp) < 0)
            goto fail;
    }
    execve(j->prog, j->argv, j->envp);
fail:;
    int e = errno;
    if (write(j->err_fd, &e, sizeof e) < 0) {
    }
    _exit(127);
}

/* Once: the stack and the pooled network namespace. 0, or -errno. */
int floor_init(void)
{
    outer_uid = getuid();
    outer_gid = getgid();
    if (!stack) {
        stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            stack = NULL;
            return -errno;
        }
    }
    if (pool_netns < 0) {
        own_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (own_netns < 0 || unshare(CLONE_NEWNET) < 0)
            return -errno;
        int rc = lo_up();
        pool_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        int e = errno;
        if (setns(own_netns, CLONE_NEWNET) < 0)
            return -errno;
        if (rc < 0 || pool_netns < 0)
            return -(e ? e : EIO);
    }
    return 0;
}

/* The BPF program FLOOR_SECCOMP loads from `slot` (copied). 0, or -errno. */
int floor_set_filter(unsigned slot, const void *insns, unsigned count)
{
    if (slot >= FILTER_SLOTS || count == 0 || count > BPF_MAXINSNS)
        return -EINVAL;
    struct sock_filter *f = malloc(count * sizeof *f);
    if (!f)
        return -ENOMEM;
    memcpy(f, insns, count * sizeof *f);
    free(filters[slot]);
    filters[slot] = f;
    filter_lens[slot] = (unsigned short)count;
    return 0;
}

/* One launch of argv[0] with these arguments (and an empty environment) in configuration
 * cfg. Returns its wait status (>= 0), or -errno of the step that failed. */
int floor_run(int cfg, char *const *argv)
{
    const char *prog = argv[0];
    char *envp[] = {NULL};
    int p[2];
    if (!stack || ((cfg & FLOOR_SECCOMP) && !filters[FLOOR_SLOT(cfg)]))
        return -EINVAL;
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    struct job j = {cfg, prog, argv, envp, p[1]};
    unsigned long flags = CLONE_VM | CLONE_VFORK | SIGCHLD;
    if (cfg & FLOOR_NS)
        flags |= CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS;
    if (cfg & FLOOR_NETNS_NEW)
        flags |= CLONE_NEWNET;
    int joined = 0;
    if ((cfg & FLOOR_NETNS_POOL) && !(cfg & FLOOR_NETNS_NEW)) {
        if (setns(pool_netns, CLONE_NEWNET) < 0) {
            int e = errno;
            close(p[0]);
            close(p[1]);
            return -e;
        }
        joined = 1;
    }
    pid_t pid = clone(child, stack + STACK_SIZE, (int)flags, &j);
    int clone_errno = errno;
    if (joined && setns(own_netns, CLONE_NEWNET) < 0)
        abort();  /* this thread would stay in the pool's namespace: never carry on */
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return -clone_errno;
    }
    int status = 0, child_errno = 0;
    while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
    }
    if (read(p[0], &child_errno, sizeof child_errno) == (ssize_t)sizeof child_errno) {
        close(p[0]);
        return -child_errno;
    }
    close(p[0]);
    return status;
}

/* One launch of prog alone (argv = {prog}). */
int floor_launch(int cfg, const char *prog)
{
    char *argv[] = {(char *)prog, NULL};
    return floor_run(cfg, argv);
}
