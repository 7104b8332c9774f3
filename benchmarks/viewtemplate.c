/* The view template, measured alone: a launch-like clone (user, mount, pid, ipc, uts
 * namespaces; maps written by the parent) from a template mount namespace, the view's
 * mounts made in the child, exit, reap; 1000 iterations per run.
 *
 *   cc -O2 -o /tmp/viewtemplate benchmarks/viewtemplate.c
 *   /tmp/viewtemplate 3 1000 3   # before: a template of the sources (+ the host's /proc); the
 *                                # child builds the whole view, pivot_root, detaches the old tree
 *   /tmp/viewtemplate 1 1000     # after: the template IS the view (read-only root, /usr, /dev,
 *                                # a subset=pid placeholder /proc); the child mounts /tmp, its
 *                                # /proc (+ a mask), /dev/shm, /dev/pts; nothing to detach
 *   /tmp/viewtemplate 0 1 9      # no placeholder: the child's proc mount fails (exit status 11)
 *   /tmp/viewtemplate 1 1 9      # prints the child's mountinfo, then what a root in the sandbox's
 *                                # user namespace cannot do to the locked template mounts
 * Root only. docs/launch-path.md ("fourth round") has the figures.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#define CK(x) do { if ((x) < 0) { fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, strerror(errno)); _exit(1);} } while (0)
static int64_t now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000LL+t.tv_nsec;}
static int tpl_pipe[2], syncp[2];
static void wr(pid_t p, const char *n, const char *d){char f[64];sprintf(f,"/proc/%d/%s",p,n);int fd=open(f,O_WRONLY);if(fd<0||write(fd,d,strlen(d))<0){perror(f);} close(fd);}
static int build_template(void *arg)
{
    int subset = *(int*)arg;
    if (subset == 3) {
        CK(mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL));
        CK(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID|MS_NODEV, "mode=0755"));
        CK(mkdir("/tmp/newroot", 0755)); CK(mkdir("/tmp/oldroot", 0755));
        CK(mount("tmpfs", "/tmp/newroot", "tmpfs", 0, "mode=0755,size=1m"));
        CK(chdir("/tmp")); CK(syscall(SYS_pivot_root, ".", "oldroot"));
        const char *src[] = {"/dev", "/proc", "/usr"};
        for (int i = 0; i < 3; i++) { char d[64]; sprintf(d, "/newroot%s", src[i]); mkdir(d, 0755); char o[64]; sprintf(o, "/oldroot%s", src[i]); CK(mount(o, d, NULL, MS_BIND|MS_REC, NULL)); }
        CK(mkdir("/newroot/tmp", 0755));
        CK(umount2("/oldroot", MNT_DETACH));
        CK(chdir("/newroot")); CK(syscall(SYS_pivot_root, ".", ".")); CK(umount2(".", MNT_DETACH)); CK(chdir("/"));
        char b = 1; write(tpl_pipe[1], &b, 1);
        pause();
    }
    CK(mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL));
    CK(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID|MS_NODEV, "mode=0755"));
    CK(mkdir("/tmp/newroot", 0755)); CK(mkdir("/tmp/oldroot", 0755));
    CK(mount("tmpfs", "/tmp/newroot", "tmpfs", MS_NOSUID|MS_NODEV, "mode=0755,size=1m"));
    CK(chdir("/tmp")); CK(syscall(SYS_pivot_root, ".", "oldroot"));
    CK(mkdir("/newroot/usr", 0755));
    CK(mount("/oldroot/usr", "/newroot/usr", NULL, MS_BIND|MS_REC, NULL));
    CK(mount(NULL, "/newroot/usr", NULL, MS_BIND|MS_REMOUNT|MS_RDONLY|MS_NOSUID|MS_NODEV, NULL));
    CK(mkdir("/newroot/tmp", 01777)); CK(mkdir("/newroot/proc", 0555)); CK(mkdir("/newroot/dev", 0755));
    CK(mount("tmpfs", "/newroot/dev", "tmpfs", MS_NOSUID|MS_NOEXEC, "mode=0755,size=64k"));
    int fd = open("/newroot/dev/null", O_CREAT|O_WRONLY, 0644); close(fd);
    CK(mount("/oldroot/dev/null", "/newroot/dev/null", NULL, MS_BIND, NULL));
    CK(mount(NULL, "/newroot/dev/null", NULL, MS_BIND|MS_REMOUNT|MS_RDONLY|MS_NOSUID, NULL));
    CK(mkdir("/newroot/dev/shm", 01777)); CK(mkdir("/newroot/dev/pts", 0755));
    CK(mount(NULL, "/newroot/dev", NULL, MS_BIND|MS_REMOUNT|MS_RDONLY|MS_NOSUID|MS_NOEXEC, NULL));
    CK(symlink("usr/bin", "/newroot/bin"));
    if (subset == 1) CK(mount("proc", "/newroot/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC, "subset=pid,hidepid=invisible"));
    if (subset == 2) CK(mount("proc", "/newroot/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC, NULL));
    CK(chdir("/newroot")); CK(syscall(SYS_pivot_root, ".", ".")); CK(umount2(".", MNT_DETACH)); CK(chdir("/"));
    CK(mount(NULL, "/", NULL, MS_BIND|MS_REMOUNT|MS_RDONLY|MS_NOSUID|MS_NODEV, NULL));
    char b = 1; write(tpl_pipe[1], &b, 1);
    pause();
    return 0;
}
struct arg { int variant; };
static char stk[1<<20];
static int child(void *a)
{
    int v = ((struct arg*)a)->variant;
    char b; if (read(syncp[0], &b, 1) != 1) _exit(3); setresgid(0,0,0); setresuid(0,0,0);
    if (v == 3) {
        if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID|MS_NODEV, "mode=0755,size=16m") < 0) _exit(20);
        if (mkdir("/tmp/newroot", 0755) < 0)
            perror("mkdir newroot");
        mkdir("/tmp/oldroot", 0755);
        if (mount("/tmp/newroot", "/tmp/newroot", NULL, MS_BIND|MS_REC, NULL) < 0) { perror("bind newroot"); _exit(21);}
        chdir("/tmp"); if (syscall(SYS_pivot_root, ".", "oldroot") < 0) _exit(22);
        mkdir("/newroot/tmp", 0755);
        if (mount("tmpfs", "/newroot/tmp", "tmpfs", MS_NOSUID|MS_NODEV, "mode=1777,size=64m") < 0) _exit(23);
        mkdir("/newroot/proc", 0755);
        if (mount("proc", "/newroot/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC, NULL) < 0) _exit(24);
        if (mount("/oldroot/dev/null", "/newroot/proc/keys", NULL, MS_BIND, NULL) < 0) _exit(25);
        struct { unsigned long long s, c, p, u; } at = {0x1|0x2, 0, 0, 0};
        syscall(442, AT_FDCWD, "/newroot/proc/keys", 0x8000, &at, sizeof at);
        mkdir("/newroot/dev", 0755);
        if (mount("tmpfs", "/newroot/dev", "tmpfs", MS_NOSUID|MS_NOEXEC, "mode=0755,size=64k") < 0) _exit(26);
        mknod("/newroot/dev/null", S_IFREG|0644, 0);
        if (mount("/oldroot/dev/null", "/newroot/dev/null", NULL, MS_BIND, NULL) < 0) _exit(27);
        syscall(442, AT_FDCWD, "/newroot/dev/null", 0x8000, &at, sizeof at);
        mkdir("/newroot/dev/shm", 01777);
        if (mount("tmpfs", "/newroot/dev/shm", "tmpfs", MS_NOSUID|MS_NODEV, "mode=1777,size=64m") < 0) _exit(28);
        mkdir("/newroot/dev/pts", 0755);
        if (mount("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID|MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620") < 0) _exit(29);
        mount(NULL, "/newroot/dev", NULL, MS_REMOUNT|MS_BIND|MS_RDONLY|MS_NOSUID|MS_NOEXEC, NULL);
        mkdir("/newroot/usr", 0755);
        if (mount("/oldroot/usr", "/newroot/usr", NULL, MS_BIND|MS_REC, NULL) < 0) _exit(30);
        at.s = 0x1|0x2|0x4; syscall(442, AT_FDCWD, "/newroot/usr", 0x8000, &at, sizeof at);
        symlink("usr/bin", "/newroot/bin");
        chdir("/newroot"); if (syscall(SYS_pivot_root, ".", ".") < 0) _exit(31); if (umount2(".", MNT_DETACH) < 0) _exit(32); chdir("/");
        mount(NULL, "/", NULL, MS_REMOUNT|MS_BIND|MS_RDONLY|MS_NOSUID|MS_NODEV, NULL);
        _exit(0);
    }
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID|MS_NODEV, "mode=1777,size=64m") < 0) _exit(10);
    if (mount("proc", "/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC, NULL) < 0) _exit(11);
    if (v == 9) { // report
        int f = open("/proc/self/mountinfo", O_RDONLY); char m[8192]; int k = read(f, m, sizeof m); if (k>0) write(2, m, k);
    }
    if (mount("/dev/null", "/proc/keys", NULL, MS_BIND, NULL) < 0) _exit(12);
    if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID|MS_NODEV, "mode=1777,size=64m") < 0) _exit(13);
    if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID|MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620") < 0) _exit(14);
    if (v == 9) { int f = open("/proc/self/mountinfo", O_RDONLY); char m[8192]; int k = read(f, m, sizeof m); if (k>0) write(2, m, k);
       if (umount2("/proc", MNT_DETACH) < 0) perror("umount /proc (own)"); else { f = open("/proc/self/mountinfo", O_RDONLY); k = read(f, m, sizeof m); write(2, "after umount own proc: ls /proc:\n", 32); } 
       if (umount2("/usr", MNT_DETACH) < 0) perror("umount /usr (locked)");
       if (mount(NULL, "/", NULL, MS_BIND|MS_REMOUNT|MS_NOSUID|MS_NODEV, NULL) < 0) perror("remount / rw (locked ro)");
    }
    _exit(0);
}
int main(int argc, char **argv)
{
    int subset = atoi(argv[1]); int iters = atoi(argv[2]); int variant = argc > 3 ? atoi(argv[3]) : 0;
    pipe(tpl_pipe); pipe(syncp);
    pid_t tp = clone(build_template, stk + sizeof stk, CLONE_NEWNS|CLONE_NEWPID|SIGCHLD, &subset);
    CK(tp);
    char b; read(tpl_pipe[0], &b, 1);
    char p[64]; sprintf(p, "/proc/%d/ns/mnt", tp);
    int tfd = open(p, O_RDONLY); CK(tfd);
    kill(tp, SIGKILL); waitpid(tp, NULL, 0);
    int self = open("/proc/self/ns/mnt", O_RDONLY);
    CK(unshare(CLONE_FS));
    int64_t t0 = now(); int fails = 0;
    for (int i = 0; i < iters; i++) {
        CK(setns(tfd, CLONE_NEWNS));
        struct arg a = {variant};
        pid_t c = clone(child, stk + sizeof stk, CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWIPC|CLONE_NEWUTS|SIGCHLD, &a);
        CK(c);
        CK(setns(self, CLONE_NEWNS));
        wr(c, "uid_map", "0 100000 65536"); wr(c, "gid_map", "0 100000 65536"); write(syncp[1], "x", 1);
        int st; waitpid(c, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) { if (!fails++) fprintf(stderr, "child status %x\n", st); }
    }
    printf("subset=%d: %d iters, %.1f us each, fails %d\n", subset, iters, (now()-t0)/1000.0/iters, fails);
    return 0;
}
