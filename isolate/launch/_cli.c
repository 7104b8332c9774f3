/* The native `isolate` command (installed as .venv/bin/isolate).
 *
 * `isolate run [-p P] [--set K=V]... [-C DIR] [-e N=V]... [-t S] [--timing] [--] CMD...`
 * with a valid cached plan (isolate/launch/plancache.py wrote it; the format is
 * _plancache.h) is launched from here, with the launch path of the extension itself
 * (_launch.c, compiled in without Python): no Python runs. Everything else -- every
 * other subcommand, an option or form this file does not parse, a cache miss or
 * mismatch, any failure before the program's execve -- execs the Python CLI
 * (isolate-py next to this binary) with the same arguments, which then does what it
 * always did (its own errors, exit codes and messages) and stores the plan for next time.
 */
#define ISOLATE_NO_PYTHON 1
#ifdef ISOLATE_MUSL
/* setup.py builds this command with musl where it can (its start-up runs no cpuid, which
 * costs glibc's static start-up 0.25 ms on a VM); musl's <sys/mount.h> has no new mount API. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/mount.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>
/* musl's open() follows O_CLOEXEC with an fcntl(F_SETFD) (for kernels before 2.6.23): a
 * system call more for every file this command opens, here and in _launch.c's parent side. */
static int isolate_open(const char *path, int flags, ...)
{
    int mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, int);
        va_end(ap);
    }
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}
#define open isolate_open
#endif
#include "_launch.c"

#include <dirent.h>
#include <fnmatch.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/syscall.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 2U
#endif

#define HOSTIDS_BASE 2000000000L   /* isolate/plan/ids.py */
#define HOSTIDS_COUNT 65536L
#define HOSTIDS_SHARED 2           /* BASE, BASE + 1: never handed out per launch */
#define HOSTIDS_DIR "/run/isolate/ids"

extern char **environ;
static char **orig_argv;

/* ---- the Python CLI, for everything not done here ------------------------------- */
static volatile sig_atomic_t pending_sig;

static void userns_release(void);

__attribute__((noreturn)) static void fallback(void)
{
    userns_release(); /* before exec: its process shares our fd table and would wait forever */
    if (pending_sig) { /* came while no sandbox was there: what it would have done to Python */
        signal(pending_sig, SIG_DFL);
        raise(pending_sig);
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 16);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            strcpy(slash + 1, "isolate-py");
            execv(exe, orig_argv);
        }
    }
    fprintf(stderr, "isolate: cannot run the Python CLI (%s): %s\n", n > 0 ? exe : "isolate-py", strerror(errno));
    exit(125);
}

/* ---- arguments ---------------------------------------------------------------------- */
#define MAX_LIST 256
struct args {
    const char *profile;
    const char *overrides[MAX_LIST];
    int noverrides;
    const char *cwd;                 /* -C */
    const char *env[MAX_LIST];       /* -e NAME=VALUE */
    int nenv;
    int have_timeout;
    double timeout;
    const char *timeout_text;
    int timing;
    char **argv;                     /* the command */
    int argc;
};

/* argparse's float(): only plain decimal forms are taken here; the rest goes to Python. */
static int parse_seconds(const char *s, double *out)
{
    if (!*s)
        return -1;
    for (const char *c = s; *c; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '.' || *c == 'e' || *c == 'E' || *c == '+'))
            return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !(v >= 0) || v >= 1e15 || (v != 0 && v < 1e-4))
        return -1;
    *out = v;
    return 0;
}

/* repr(float) for the values parse_seconds takes: fixed notation, fewest decimals (>= 1). */
static void float_repr(double v, char *buf, size_t n)
{
    for (int k = 1; k <= 20; k++) {
        snprintf(buf, n, "%.*f", k, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static int take_value(int argc, char **argv, int *i, const char *arg, const char *lng, const char *shrt,
                      const char **out)
{
    size_t ll = strlen(lng);
    if (strcmp(arg, lng) == 0 || (shrt && strcmp(arg, shrt) == 0)) {
        if (*i + 1 >= argc || argv[*i + 1][0] == '-')
            return -1; /* argparse's own error, from Python */
        *out = argv[++*i];
        return 1;
    }
    if (strncmp(arg, lng, ll) == 0 && arg[ll] == '=') {
        *out = arg + ll + 1;
        return 1;
    }
    return 0;
}

static int parse_run(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof *a);
    a->profile = "default";
    int i = 2;
    for (; i < argc; i++) {
        const char *arg = argv[i], *v;
        int r;
        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        if (arg[0] != '-' )
            break;
        if (strcmp(arg, "--timing") == 0) {
            a->timing = 1;
            continue;
        }
        if ((r = take_value(argc, argv, &i, arg, "--profile", "-p", &v))) {
            if (r < 0)
                return -1;
            a->profile = v;
        } else if ((r = take_value(argc, argv, &i, arg, "--set", NULL, &v))) {
            if (r < 0 || a->noverrides >= MAX_LIST)
                return -1;
            a->overrides[a->noverrides++] = v;
        } else if ((r = take_value(argc, argv, &i, arg, "--cwd", "-C", &v))) {
            if (r < 0)
                return -1;
            a->cwd = v;
        } else if ((r = take_value(argc, argv, &i, arg, "--env", "-e", &v))) {
            if (r < 0 || a->nenv >= MAX_LIST)
                return -1;
            const char *eq = strchr(v, '=');
            if (!eq || eq == v)
                return -1; /* Python says why */
            a->env[a->nenv++] = v;
        } else if ((r = take_value(argc, argv, &i, arg, "--timeout", "-t", &v))) {
            if (r < 0 || parse_seconds(v, &a->timeout) < 0)
                return -1;
            a->have_timeout = 1;
            a->timeout_text = v;
        } else {
            return -1; /* --pty, --help, abbreviations, attached short values: Python */
        }
    }
    if (i >= argc)
        return -1;
    a->argv = argv + i;
    a->argc = argc - i;
    return 0;
}

/* ---- os.path.abspath ------------------------------------------------------------------- */
static int abspath(const char *p, char *out, size_t n)
{
    char tmp[8192];
    if (p[0] == '/') {
        if (strlen(p) >= sizeof tmp)
            return -1;
        strcpy(tmp, p);
    } else {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd) || strlen(cwd) + strlen(p) + 2 >= sizeof tmp)
            return -1;
        strcpy(tmp, cwd);
        strcat(tmp, "/");
        strcat(tmp, p);
    }
    if (tmp[0] == '/' && tmp[1] == '/' && tmp[2] != '/')
        return -1; /* posixpath keeps exactly two leading slashes: leave it to Python */
    /* normpath: components, ".", "..", repeated and trailing slashes */
    size_t o = 0;
    const char *s = tmp;
    if (n < 2)
        return -1;
    out[o++] = '/';
    while (*s) {
        while (*s == '/')
            s++;
        const char *e = s;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - s);
        if (len == 0)
            break;
        if (len == 1 && s[0] == '.') {
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            if (o > 1) {
                o--;
                while (o > 1 && out[o - 1] != '/')
                    o--;
                if (o > 1)
                    o--;
            }
        } else {
            if (o > 1)
                out[o++] = '/';
            if (o + len + 1 >= n)
                return -1;
            memcpy(out + o, s, len);
            o += len;
        }
        s = e;
    }
    out[o] = 0;
    return 0;
}

/* ---- the cache entry ---------------------------------------------------------------- */
#define MAX_RECS 64
struct entry {
    unsigned char *buf;
    size_t len;
    struct plan plan;
    struct pc_launch li;
    const char *init_path, *cwd, *oom_text;
    const char *keep[MAX_LIST];
    int nkeep;
    const char *set_name[MAX_LIST], *set_value[MAX_LIST];
    int nset;
    const unsigned char *cg[8];
    size_t cg_len[8];
    int ncg;
    int idmap_index[MAX_RECS], idmap_plain[MAX_RECS];
    const char *idmap_src[MAX_RECS];
    int nidmap;
};

static void key_add(char *key, size_t *len, size_t cap, const char *s)
{
    size_t n = strlen(s) + 1;
    if (*len + n <= cap)
        memcpy(key + *len, s, n);
    *len += n;
}

static int cache_dir(char *out, size_t n)
{
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && x[0] == '/')
        return snprintf(out, n, "%s/isolate", x) < (int)n ? 0 : -1;
    const char *home = getenv("HOME");
    if (!home || home[0] != '/')
        return -1;
    return snprintf(out, n, "%s/.cache/isolate", home) < (int)n ? 0 : -1;
}

static int dep_file_ok(const char *path, const unsigned char *content, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    unsigned char buf[16384];
    unsigned char *b = n + 1 <= sizeof buf ? buf : malloc(n + 1);
    size_t got = 0;
    ssize_t r;
    int ok = 0;
    if (b) {
        while (got < n + 1 && (r = read(fd, b + got, n + 1 - got)) > 0)
            got += (size_t)r;
        ok = got == n && memcmp(b, content, n) == 0;
        if (b != buf)
            free(b);
    }
    close(fd);
    return ok;
}

/* Read and check the entry for this key; 0 if it is valid and complete. */
static int load_entry(const char *key, size_t key_len, struct entry *e)
{
    char dir[4096], path[4200];
    if (cache_dir(dir, sizeof dir) < 0)
        return -1;
    struct stat st;
    if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
        return -1;
    snprintf(path, sizeof path, "%s/%016llx.plan", dir,
             (unsigned long long)pc_fnv((const unsigned char *)key, key_len));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) ||
        st.st_size < PC_HEADER || st.st_size > (64 << 20)) {
        close(fd);
        return -1;
    }
    e->len = (size_t)st.st_size;
    e->buf = malloc(e->len + 1);
    size_t got = 0;
    ssize_t r;
    while (e->buf && got < e->len && (r = read(fd, e->buf + got, e->len - got)) > 0)
        got += (size_t)r;
    close(fd);
    if (!e->buf || got != e->len)
        return -1;
    uint32_t version, total;
    uint64_t sum;
    memcpy(&version, e->buf + 8, 4);
    memcpy(&total, e->buf + 12, 4);
    memcpy(&sum, e->buf + 16, 8);
    if (memcmp(e->buf, PC_MAGIC, 8) || version != PC_VERSION || total != e->len ||
        pc_sum(e->buf + PC_HEADER, e->len - PC_HEADER) != sum)
        return -1;
    int have_key = 0, have_plan = 0, have_launch = 0;
    size_t off = PC_HEADER;
    while (off < e->len) {
        if (e->len - off < 8)
            return -1;
        uint32_t tag, len;
        memcpy(&tag, e->buf + off, 4);
        memcpy(&len, e->buf + off + 4, 4);
        off += 8;
        if (len > e->len - off)
            return -1;
        const unsigned char *d = e->buf + off;
        const char *s = (const char *)d;
        off += len;
        /* Every string record ends with a NUL inside the record. */
        if (tag != PC_PLAN && tag != PC_LAUNCH && (len == 0 || d[len - 1] != 0))
            return -1;
        switch (tag) {
        case PC_KEY:
            if (len != key_len || memcmp(d, key, key_len))
                return -1;
            have_key = 1;
            break;
        case PC_DEP_FILE: {
            size_t pl = strnlen(s, len);
            if (pl + 1 > len || !dep_file_ok(s, d + pl + 1, len - pl - 2))
                return -1;
            break;
        }
        case PC_DEP_STAT: {
            uint64_t v[4];
            if (len < 33)
                return -1;
            memcpy(v, d, 32);
            struct stat fs;
            if (stat(s + 32, &fs) < 0 || (uint64_t)fs.st_dev != v[0] || (uint64_t)fs.st_ino != v[1] ||
                (uint64_t)fs.st_size != v[2] ||
                (int64_t)fs.st_mtim.tv_sec * 1000000000LL + fs.st_mtim.tv_nsec != (int64_t)v[3])
                return -1;
            break;
        }
        case PC_DEP_ABSENT: {
            struct stat fs;
            if (stat(s, &fs) == 0 || errno != ENOENT)
                return -1;
            break;
        }
        case PC_DEP_TYPE: {
            uint32_t type;
            if (len < 6)
                return -1;
            memcpy(&type, d, 4);
            const char *p = s + 4;
            size_t pl = strnlen(p, len - 4);
            if (4 + pl + 1 >= len)
                return -1;
            const char *target = p + pl + 1;
            struct stat fs;
            if (lstat(p, &fs) < 0) {
                if (errno != ENOENT || type != 0)
                    return -1;
            } else if ((uint32_t)(fs.st_mode & S_IFMT) != type) {
                return -1;
            } else if (S_ISLNK(fs.st_mode)) {
                char buf[4096];
                ssize_t n = readlink(p, buf, sizeof buf - 1);
                if (n < 0 || (size_t)n != strlen(target) || memcmp(buf, target, (size_t)n))
                    return -1;
            }
            break;
        }
        case PC_DEP_ENV: {
            uint32_t present;
            if (len < 6)
                return -1;
            memcpy(&present, d, 4);
            const char *name = s + 4;
            size_t nl = strnlen(name, len - 4);
            if (4 + nl + 1 >= len)
                return -1;
            const char *value = name + nl + 1;
            const char *now = getenv(name);
            if (present ? (!now || strcmp(now, value)) : now != NULL)
                return -1;
            break;
        }
        case PC_PLAN:
            if (plan_parse(d, len, &e->plan) < 0)
                return -1;
            have_plan = 1;
            break;
        case PC_LAUNCH:
            if (len != sizeof e->li)
                return -1;
            memcpy(&e->li, d, sizeof e->li);
            have_launch = 1;
            break;
        case PC_INIT_PATH:
            e->init_path = s;
            break;
        case PC_CWD:
            e->cwd = s;
            break;
        case PC_OOM_TEXT:
            e->oom_text = s;
            break;
        case PC_ENV_KEEP:
            if (e->nkeep >= MAX_LIST)
                return -1;
            e->keep[e->nkeep++] = s;
            break;
        case PC_ENV_SET: {
            size_t nl = strnlen(s, len);
            if (e->nset >= MAX_LIST || nl + 1 >= len)
                return -1;
            e->set_name[e->nset] = s;
            e->set_value[e->nset++] = s + nl + 1;
            break;
        }
        case PC_CGROUP:
            if (e->ncg >= 8)
                return -1;
            e->cg[e->ncg] = d;
            e->cg_len[e->ncg++] = len;
            break;
        case PC_IDMAP:
            if (e->nidmap >= MAX_RECS || len < 9)
                return -1;
            memcpy(&e->idmap_index[e->nidmap], d, 4);
            memcpy(&e->idmap_plain[e->nidmap], d + 4, 4);
            e->idmap_src[e->nidmap++] = s + 8;
            break;
        default:
            return -1; /* a record this build does not know: not ours */
        }
    }
    if (!have_key || !have_plan || !have_launch || !e->init_path || !e->cwd)
        return -1;
    if (e->li.nops != e->plan.nops || e->li.use_init != e->plan.use_init || e->li.pidns != e->plan.pidns ||
        e->li.host_ids != e->plan.launch_ids)
        return -1;
    for (int i = 0; i < e->nidmap; i++)
        if (e->idmap_index[i] < 0 || e->idmap_index[i] >= e->plan.nops)
            return -1;
    return 0;
}

/* ---- the environment: Plan.environment(extra=...) --------------------------------- */
struct env { char **v; int n, cap; };

static int env_set(struct env *env, const char *name, size_t nl, const char *value)
{
    size_t vl = strlen(value);
    char *item = malloc(nl + vl + 2);
    if (!item)
        return -1;
    memcpy(item, name, nl);
    item[nl] = '=';
    memcpy(item + nl + 1, value, vl + 1);
    for (int i = 0; i < env->n; i++)
        if (strncmp(env->v[i], name, nl) == 0 && env->v[i][nl] == '=') {
            env->v[i] = item;
            return 0;
        }
    if (env->n + 2 > env->cap) {
        env->cap = env->cap ? env->cap * 2 : 64;
        env->v = realloc(env->v, (size_t)env->cap * sizeof *env->v);
        if (!env->v)
            return -1;
    }
    env->v[env->n++] = item;
    env->v[env->n] = NULL;
    return 0;
}

static const char *env_get(char *const *v, const char *name)
{
    size_t nl = strlen(name);
    for (int i = 0; v && v[i]; i++)
        if (strncmp(v[i], name, nl) == 0 && v[i][nl] == '=')
            return v[i] + nl + 1;
    return NULL;
}

static int build_env(const struct entry *e, const struct args *a, struct env *env)
{
    memset(env, 0, sizeof *env);
    if (env_set(env, "X", 1, "") < 0)  /* allocates the array; removed below */
        return -1;
    env->n = 0;
    env->v[0] = NULL;
    for (char **c = environ; *c; c++) {
        const char *eq = strchr(*c, '=');
        if (!eq || eq == *c)
            return -1; /* a name Python would refuse or read otherwise */
    }
    if (!e->li.env_clear)
        for (char **c = environ; *c; c++)
            if (env_set(env, *c, (size_t)(strchr(*c, '=') - *c), strchr(*c, '=') + 1) < 0)
                return -1;
    for (int k = 0; k < e->nkeep; k++)
        for (char **c = environ; *c; c++) {
            const char *eq = strchr(*c, '=');
            char name[4096];
            size_t nl = (size_t)(eq - *c);
            if (nl >= sizeof name)
                return -1;
            memcpy(name, *c, nl);
            name[nl] = 0;
            if (fnmatch(e->keep[k], name, FNM_NOESCAPE) == 0 && env_set(env, name, nl, eq + 1) < 0)
                return -1;
        }
    for (int k = 0; k < e->nset; k++)
        if (env_set(env, e->set_name[k], strlen(e->set_name[k]), e->set_value[k]) < 0)
            return -1;
    for (int k = 0; k < a->nenv; k++) {
        const char *eq = strchr(a->env[k], '=');
        if (env_set(env, a->env[k], (size_t)(eq - a->env[k]), eq + 1) < 0)
            return -1;
    }
    return 0;
}

/* Popen._exec_paths: the candidates for argv[0]. */
static char **exec_paths(const char *program, char *const *envp, int given, int *count)
{
    char **out;
    if (strchr(program, '/')) {
        out = calloc(2, sizeof *out);
        out[0] = (char *)program;
        *count = 1;
        return out;
    }
    const char *path = env_get(envp, "PATH");
    if (given) {
        if (!path)
            path = "/bin:/usr/bin"; /* os.defpath */
    } else {
        if (!path || !*path)
            path = getenv("PATH");
        if (!path || !*path)
            path = "/usr/local/bin:/usr/bin:/bin";
    }
    int n = 1;
    for (const char *c = path; *c; c++)
        n += *c == ':';
    out = calloc((size_t)n + 1, sizeof *out);
    int i = 0;
    const char *s = path;
    for (;;) {
        const char *e = strchr(s, ':');
        size_t dl = e ? (size_t)(e - s) : strlen(s);
        const char *d = dl ? s : ".";
        if (!dl)
            dl = 1;
        size_t pl = strlen(program);
        char *p = malloc(dl + pl + 2);
        memcpy(p, d, dl);
        size_t o = dl;
        if (p[o - 1] != '/')
            p[o++] = '/';
        memcpy(p + o, program, pl + 1);
        out[i++] = p;
        if (!e)
            break;
        s = e + 1;
    }
    *count = i;
    return out;
}

/* ---- per-launch kernel objects ------------------------------------------------------ */
struct cgroups {
    int n;
    char dirs[8][4096];
    char *procs[9];
    int version;
    int nmove;                       /* v1: this thread moves in and back around the clone */
    int move_new[8], move_orig[8];
    int not_memory[8];               /* v1: a hierarchy without memory.oom_control (pids) */
};

/* A small file's whole content, NUL-terminated: its length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    ssize_t r = 0;
    while (got + 1 < cap && ((r = read(fd, buf + got, cap - 1 - got)) > 0 || (r < 0 && errno == EINTR)))
        if (r > 0)
            got += (size_t)r;
    close(fd);
    if (r < 0 || got + 1 >= cap)
        return -1;
    buf[got] = 0;
    return (ssize_t)got;
}

/* The caller's own cgroup of a v1 hierarchy (kernel/mounts.py own_cgroup_v1_path + join).
 * /proc/thread-self/cgroup is read once for all the controllers. */
static int own_cgroup_dir(const char *ctrl, const char *point, const char *root, char *out, size_t n)
{
    static char table[16384];
    static ssize_t table_len = -2;
    if (table_len == -2)
        table_len = read_small("/proc/thread-self/cgroup", table, sizeof table);
    if (table_len < 0)
        return -1;
    int found = -1;
    for (const char *l = table; found < 0 && *l;) {
        const char *end = strchr(l, '\n');
        size_t ll = end ? (size_t)(end - l) : strlen(l);
        char line[4096];
        if (ll >= sizeof line)
            return -1;
        memcpy(line, l, ll);
        line[ll] = 0;
        l += ll + (end ? 1 : 0);
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b)
            continue;
        *b = 0;
        for (char *save = NULL, *tok = strtok_r(a + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            if (strcmp(tok, ctrl) == 0) {
                const char *path = b + 1;
                size_t rl = strlen(root);
                while (rl && root[rl - 1] == '/')
                    rl--;
                if (rl && !(strncmp(path, root, rl) == 0 && (path[rl] == 0 || path[rl] == '/')))
                    break;
                path += rl;
                while (*path == '/')
                    path++;
                found = snprintf(out, n, *path ? "%s/%s" : "%s", point, path) < (int)n ? 0 : -1;
                break;
            }
    }
    return found;
}

static int write_file(const char *path, const char *value)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, value, strlen(value));
    int e = errno;
    close(fd);
    errno = e;
    return w == (ssize_t)strlen(value) ? 0 : -1;
}

static void cgroups_kill(struct cgroups *g)
{
    char path[4200];
    for (int i = 0; i < g->n; i++) {
        if (g->version == 2) {
            snprintf(path, sizeof path, "%s/cgroup.kill", g->dirs[i]);
            if (write_file(path, "1") == 0)
                continue;
        }
        snprintf(path, sizeof path, "%s/cgroup.procs", g->dirs[i]);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        long pid;
        while (fscanf(f, "%ld", &pid) == 1)
            kill((pid_t)pid, SIGKILL);
        fclose(f);
    }
}

static void cgroups_destroy(struct cgroups *g)
{
    struct timespec delay = {0, 500000};
    for (int tries = 0; tries < 400; tries++) {
        int busy = 0;
        for (int i = 0; i < g->n; i++) {
            if (!g->dirs[i][0])
                continue;
            if (rmdir(g->dirs[i]) == 0 || errno == ENOENT)
                g->dirs[i][0] = 0;
            else if (errno == EBUSY || errno == ENOTEMPTY)
                busy = 1;
            else
                g->dirs[i][0] = 0; /* not ours to remove: Python's sweep gets it */
        }
        if (!busy)
            return;
        cgroups_kill(g);
        nanosleep(&delay, NULL);
        if (delay.tv_nsec < 50000000)
            delay.tv_nsec *= 2;
    }
}

static int cgroups_create(const struct entry *e, struct cgroups *g)
{
    memset(g, 0, sizeof *g);
    g->version = e->li.cgroup_version;
    char name[64];
    snprintf(name, sizeof name, "%d-1", (int)getpid());
    for (int i = 0; i < e->ncg; i++) {
        const char *s = (const char *)e->cg[i], *end = s + e->cg_len[i];
        const char *parent = s;
        s += strlen(s) + 1;
        const char *ctrl = s;
        s += strlen(s) + 1;
        const char *point = s < end ? s : "";
        s += strlen(point) + 1;
        const char *root = s < end ? s : "";
        s += strlen(root) + 1;
        if (s > end)
            return -1;
        snprintf(g->dirs[i], sizeof g->dirs[i], "%s/%s", parent, name);
        int made = mkdir(g->dirs[i], 0755);
        if (made < 0 && errno == ENOENT) /* the parent first (it is there but the first time) */
            made = mkdir(parent, 0755) < 0 && errno != EEXIST ? -1 : mkdir(g->dirs[i], 0755);
        if (made < 0) {
            g->dirs[i][0] = 0;
            return -1;
        }
        g->n = i + 1;
        g->not_memory[i] = g->version == 1 && *ctrl && strcmp(ctrl, "memory") != 0;
        while (s < end) {
            const char *file = s;
            s += strlen(s) + 1;
            if (s >= end)
                return -1;
            const char *value = s;
            s += strlen(s) + 1;
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", g->dirs[i], file);
            if (write_file(path, value) < 0)
                return -1;
        }
        g->procs[i] = malloc(4200);
        snprintf(g->procs[i], 4200, "%s/cgroup.procs", g->dirs[i]);
        if (*ctrl && g->nmove == i) {
            char own[4096], path[4200];
            int nf = -1, of = -1;
            if (own_cgroup_dir(ctrl, point, root, own, sizeof own) == 0) {
                snprintf(path, sizeof path, "%s/tasks", g->dirs[i]);
                nf = open(path, O_WRONLY | O_CLOEXEC);
                snprintf(path, sizeof path, "%s/tasks", own);
                of = open(path, O_WRONLY | O_CLOEXEC);
            }
            if (nf >= 0 && of >= 0) {
                g->move_new[g->nmove] = nf;
                g->move_orig[g->nmove++] = of;
            } else {
                if (nf >= 0)
                    close(nf);
                if (of >= 0)
                    close(of);
            }
        }
    }
    if (g->nmove != g->n) /* all or none: else cgroup.procs for all */
        g->nmove = 0;
    return 0;
}

static long keyed(const char *path, const char *key)
{
    char buf[4096];
    if (read_small(path, buf, sizeof buf) < 0)
        return -1;
    size_t kl = strlen(key);
    long out = -1;
    for (const char *l = buf; *l;) {
        if (strncmp(l, key, kl) == 0 && l[kl] == ' ')
            out = strtol(l + kl + 1, NULL, 10);
        const char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return out;
}

/* Usage.oom_kills > 0 (v1: memory.oom_control, v2: memory.events). */
static int cgroups_oom(struct cgroups *g)
{
    char path[4200];
    for (int i = 0; i < g->n; i++) {
        if (!g->dirs[i][0] || g->not_memory[i])
            continue;
        snprintf(path, sizeof path, "%s/%s", g->dirs[i], g->version == 2 ? "memory.events" : "memory.oom_control");
        if (keyed(path, "oom_kill") > 0)
            return 1;
    }
    return 0;
}

static int lease_fd = -1;

static long hostid_allocate(void)
{
    char path[128];
    for (long id = HOSTIDS_BASE + HOSTIDS_SHARED; id < HOSTIDS_BASE + HOSTIDS_COUNT; id++) {
        snprintf(path, sizeof path, HOSTIDS_DIR "/%ld", id);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 && errno == ENOENT) { /* the directory, the first time (as hostids.allocate) */
            if ((mkdir("/run/isolate", 0777) < 0 && errno != EEXIST) || (mkdir(HOSTIDS_DIR, 0700) < 0 && errno != EEXIST))
                return -1;
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        }
        if (fd < 0)
            return -1;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            lease_fd = fd;
            return id;
        }
        close(fd);
        if (errno != EWOULDBLOCK)
            return -1;
    }
    return -1;
}

/* process._give_pipes: pipes of the program's table become the host id's. */
static void give_pipes(const int *fds, const struct stat *sts, int n, long id)
{
    int fifo = 0;
    for (int i = 0; i < n; i++)
        fifo |= S_ISFIFO(sts[i].st_mode) && sts[i].st_uid != (uid_t)id;
    if (!fifo) /* nothing to give (a FIFO of a filesystem is not a pipe either) */
        return;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return;
    struct stat ps;
    fstat(pfd[0], &ps);
    close(pfd[0]);
    close(pfd[1]);
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (fstat(fds[i], &st) == 0 && S_ISFIFO(st.st_mode) && st.st_dev == ps.st_dev && st.st_uid != (uid_t)id)
            if (fchown(fds[i], (uid_t)id, (gid_t)id) < 0) {
            }
    }
}

static int g_pidfd = -1;

/* userns_make() without waiting for its process: it only has to exist while the maps
 * are written and its namespace opened; it exits when the pipe closes, and is reaped
 * with this command. Once per command: its stack and argument are static. The pipe's
 * write end (userns_wfd) stays open until the sandbox runs (run() closes it): the process
 * then wakes and exits while this command waits, not while it prepares the launch. */
static int userns_rfd = -1, userns_wfd = -1;

static void userns_release(void)
{
    if (userns_wfd >= 0) { /* shared table (CLONE_FILES): the process reads EOF and exits */
        close(userns_wfd);
        close(userns_rfd);
    }
    userns_wfd = userns_rfd = -1;
}
static char userns_stack[64 * 1024] __attribute__((aligned(16)));

static int userns_make_nowait(const char *uid_map, const char *gid_map)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    userns_rfd = pfd[0];
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pid = clone(userns_child, userns_stack + sizeof userns_stack, CLONE_NEWUSER | CLONE_VM | CLONE_FILES | SIGCHLD,
                    &userns_rfd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        userns_rfd = -1;
        return -e;
    }
    int r = write_proc_file(pid, "uid_map", uid_map), fd = -1;
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
    userns_wfd = pfd[1];
    if (r)
        userns_release();
    return r ? r : fd;
}

/* --timing: the native command's own phases, ns since main() began. */
static int64_t t_main;
#define MAX_MARKS 16
static const char *mark_name[MAX_MARKS];
static int64_t mark_ns[MAX_MARKS];
static int nmarks;
static int64_t mono_ns(void);
static void cli_mark(const char *name)
{
    if (nmarks < MAX_MARKS) {
        mark_name[nmarks] = name;
        mark_ns[nmarks++] = mono_ns();
    }
}

/* Our signals go to the sandbox, whose pid 1 hands them to the program; one that comes
 * before the sandbox exists is handed on once it does. */
static void forward(int sig)
{
    int e = errno;
    if (g_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, g_pidfd, sig, NULL, 0);
    else
        pending_sig = sig;
    errno = e;
}

static const int fwd_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static void forward_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof fwd_signals / sizeof fwd_signals[0]; i++)
        sigaction(fwd_signals[i], &sa, NULL);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- isolate run ------------------------------------------------------------------- */
static int run(struct args *a)
{
    /* The key: what the file name hashes, and what the entry must hold byte for byte. */
    char cwd[8192];
    if (a->cwd) {
        if (abspath(a->cwd, cwd, sizeof cwd) < 0)
            return -1;
    } else if (!getcwd(cwd, sizeof cwd)) {
        return -1;
    }
    char key[65536], num[64];
    size_t key_len = 0;
    key_add(key, &key_len, sizeof key, "isolate-plan");
    key_add(key, &key_len, sizeof key, ISOLATE_BUILD_ID);
    char exe[4096];
    ssize_t xn = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (xn <= 0)
        return -1;
    exe[xn] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = 0; /* this command's directory (isolate-py beside it): each install its own entries */
    key_add(key, &key_len, sizeof key, exe[0] ? exe : "/");
    snprintf(num, sizeof num, "%u", (unsigned)geteuid());
    key_add(key, &key_len, sizeof key, num);
    snprintf(num, sizeof num, "%u", (unsigned)getegid());
    key_add(key, &key_len, sizeof key, num);
    key_add(key, &key_len, sizeof key, a->profile);
    snprintf(num, sizeof num, "%d", a->noverrides);
    key_add(key, &key_len, sizeof key, num);
    for (int i = 0; i < a->noverrides; i++)
        key_add(key, &key_len, sizeof key, a->overrides[i]);
    key_add(key, &key_len, sizeof key, cwd);
    if (key_len > sizeof key)
        return -1;

    static struct entry e;
    if (load_entry(key, key_len, &e) < 0)
        return -1;
    cli_mark("plan checked");
    const struct plan *p = &e.plan;

    struct env env;
    if (build_env(&e, a, &env) < 0)
        return -1;
    int nexec;
    char **paths = exec_paths(a->argv[0], env.v, a->nenv > 0, &nexec);

    int src[3], dst[3], nfds = 0;
    struct stat fd_st[3];
    for (int fd = 0; fd < 3; fd++)
        if (fstat(fd, &fd_st[nfds]) == 0) {
            src[nfds] = dst[nfds] = fd;
            nfds++;
        }
    int first_private = 3;
    const char *launch_cwd = a->cwd ? cwd : e.cwd;

    int init_fd = -1, self_pidfd = -1, bpf_fd = -1, cgroup_fd = -1, userns = -1;
    int op_fds[p->nops + 1];
    for (int i = 0; i <= p->nops; i++)
        op_fds[i] = -1;
    struct cgroups g;
    memset(&g, 0, sizeof g);
    long id = -1;
    char uid_map[64], gid_map[64];
    int ok = 0;
    char *init_argv[16 + nexec + a->argc];

    if (p->use_init) {
        init_fd = open(e.init_path, O_PATH | O_CLOEXEC);
        if (init_fd < 0)
            goto out;
    }
    if (p->die_with_parent) {
        self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0); /* close-on-exec, always */
        if (self_pidfd < 0)
            goto out;
    }
    if (e.li.cgroup_version && cgroups_create(&e, &g) < 0)
        goto out;
    cli_mark("cgroups made");
    if (g.n && p->use_init && !p->pidns && p->die_with_parent) {
        cgroup_fd = open(g.procs[0], O_RDONLY | O_CLOEXEC);
        if (cgroup_fd < 0)
            goto out;
    }
    if (p->bpf && p->use_init) {
        bpf_fd = memfd_create("isolate-seccomp", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (bpf_fd < 0 || write(bpf_fd, p->bpf, p->bpf_len) != (ssize_t)p->bpf_len ||
            fcntl(bpf_fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
            goto out;
    }
    int nia = 0;
    char slot[7][24];
    if (p->use_init) {
        int flags = (p->pidns ? 1 : 0) | (p->die_with_parent ? 2 : 0);
        snprintf(slot[0], 24, "%d", first_private);
        snprintf(slot[1], 24, "%d", p->die_with_parent ? first_private + 1 : -1);
        snprintf(slot[2], 24, "%d", bpf_fd >= 0 ? first_private + 2 : -1);
        snprintf(slot[3], 24, "%d", flags);
        snprintf(slot[4], 24, "%d", first_private);
        snprintf(slot[5], 24, "%d", cgroup_fd >= 0 ? first_private + 3 : -1);
        snprintf(slot[6], 24, "%d", nexec);
        init_argv[nia++] = "isolate-init";
        for (int i = 0; i < 7; i++)
            init_argv[nia++] = slot[i];
        for (int i = 0; i < nexec; i++)
            init_argv[nia++] = paths[i];
        for (int i = 0; i < a->argc; i++)
            init_argv[nia++] = a->argv[i];
    }
    init_argv[nia] = NULL;

    struct launch l = {
        .plan = p, .exec_paths = paths, .nexec = nexec, .argv = a->argv, .envp = env.v,
        .cwd = launch_cwd, .nfds = nfds, .fd_src = src, .fd_dst = dst,
        .init_fd = init_fd, .init_argv = init_argv, .first_private = first_private,
        .parent_pidfd = p->die_with_parent ? self_pidfd : -1, .bpf_fd = bpf_fd, .netns_fd = -1,
        .cgroup_procs = g.n ? g.procs : NULL, .ncgroups = g.n, .cgroup_fd = cgroup_fd,
        .uid_map = p->uid_map, .gid_map = p->gid_map, .switch_uid = -1, .switch_gid = -1,
        .op_fds = NULL, .ctty = 0, .umask = -1, .keep_ignored = 0, .ngroups = -1, .groups = NULL,
        .ncg_move = g.nmove, .cg_move_new = g.move_new, .cg_move_orig = g.move_orig,
        .defer_status = !a->timing, /* --timing prints the child's phases before the program runs */
    };
    if (p->launch_ids) {
        id = hostid_allocate();
        if (id < 0)
            goto out;
        char line[64];
        snprintf(line, sizeof line, "0 %ld 1\n", id);
        if (e.nidmap) {
            userns = userns_make_nowait(line, line);
            if (userns < 0)
                goto out;
        }
        for (int i = 0; i < e.nidmap; i++) {
            int fd = tree_detach(e.idmap_src[i], e.idmap_plain[i] ? -1 : userns);
            if (fd == -ENOENT)
                continue; /* the child reports it (or skips an optional one) */
            if (fd < 0 && !e.idmap_plain[i])
                fd = tree_detach(e.idmap_src[i], -1);
            if (fd < 0)
                goto out;
            op_fds[e.idmap_index[i]] = fd;
        }
        give_pipes(src, fd_st, nfds, id);
        cli_mark("host id, trees");
        snprintf(uid_map, sizeof uid_map, "%d %ld 1\n", e.li.inside_uid, id);
        snprintf(gid_map, sizeof gid_map, "%d %ld 1\n", e.li.inside_gid, id);
        l.uid_map = uid_map;
        l.gid_map = gid_map;
        l.switch_uid = e.li.inside_uid;
        l.switch_gid = e.li.inside_gid;
        l.op_fds = op_fds;
    }

    int64_t timings[MAX_TIMINGS];
    memset(timings, 0, sizeof timings);
    forward_signals(); /* before the clone: the child resets every handler first thing */
    struct launch_result res;
    launch_core(&l, -1, g.n, g.n ? g.procs : NULL, timings, &res);
    for (int i = 0; i < p->nops; i++)
        if (op_fds[i] >= 0)
            close(op_fds[i]);
    userns_release();
    if (res.err)
        goto out; /* nothing ran: Python launches again and reports it its own way */
    ok = 1;

    /* The program runs. */
    g_pidfd = res.pidfd;
    if (pending_sig)
        forward(pending_sig);
    if (a->timing) {
        /* As the Python CLI: ms since the launch began; then this command's own phases. */
        fprintf(stderr, "isolate: timing: plan: cached, native launch\n");
        fprintf(stderr, "isolate: timing: %14s %8.3f ms\n", "start", 0.0);
        for (int i = 0; i < MAX_TIMINGS; i++)
            if (timings[i])
                fprintf(stderr, "isolate: timing: %14s %8.3f ms\n", i < STEP__COUNT ? step_names[i] : "?",
                        (double)(timings[i] - res.t_start) / 1e6);
        fprintf(stderr, "isolate: timing: %14s %8.3f ms\n", "returned", (double)(res.t_end - res.t_start) / 1e6);
        for (int i = 0; i < nmarks; i++)
            fprintf(stderr, "isolate: timing: native: %s at %.3f ms of the command\n", mark_name[i],
                    (double)(mark_ns[i] - t_main) / 1e6);
        fprintf(stderr, "isolate: timing: native: launch began at %.3f ms of the command\n",
                (double)(res.t_start - t_main) / 1e6);
    }

    int timed_out = 0;
    int64_t deadline = a->have_timeout ? mono_ns() + (int64_t)(a->timeout * 1e9) : 0;
    for (;;) {
        struct pollfd pfd = {res.pidfd, POLLIN, 0};
        int wait_ms = -1;
        if (a->have_timeout) {
            int64_t left = deadline - mono_ns();
            if (left <= 0) {
                timed_out = 1;
                break;
            }
            wait_ms = (int)((left + 999999) / 1000000);
        }
        int r = poll(&pfd, 1, wait_ms);
        if (r > 0)
            break;
    }
    if (timed_out) {
        if (!p->pidns)
            kill(-(pid_t)res.pid, SIGKILL);
        if (g.n)
            cgroups_kill(&g);
        syscall(SYS_pidfd_send_signal, res.pidfd, SIGKILL, NULL, 0);
    }
    int sts = 0, setup_failed = 0;
    while (waitpid((pid_t)res.pid, &sts, 0) < 0 && errno == EINTR)
        ;
    if (res.status_fd >= 0) {
        unsigned char buf[4096];
        size_t got = 0;
        ssize_t r;
        while (got < sizeof buf && ((r = read(res.status_fd, buf + got, sizeof buf - got)) > 0 || (r < 0 && errno == EINTR)))
            if (r > 0)
                got += (size_t)r;
        int nexited = 0, status = 0;
        for (size_t o = 0; o + sizeof(struct isolate_msg) <= got; o += sizeof(struct isolate_msg)) {
            struct isolate_msg m;
            memcpy(&m, buf + o, sizeof m);
            if (o == 0 && m.kind == MSG_ERROR)
                setup_failed = 1; /* deferred: the setup failed, the program never ran */
            if (m.kind == MSG_EXITED) {
                nexited++;
                status = m.a;
            }
        }
        if (nexited == 1)
            sts = status;
        close(res.status_fd);
    }
    int64_t t_exit = mono_ns();
    int oom = g.n && e.oom_text ? cgroups_oom(&g) : 0;
    if (g.n)
        cgroups_destroy(&g);
    if (lease_fd >= 0)
        close(lease_fd);
    if (setup_failed)
        return -1; /* Python launches again and reports it its own way */
    if (a->timing)
        fprintf(stderr, "isolate: timing: native: reaped at %.3f ms, cleaned up at %.3f ms of the command\n",
                (double)(t_exit - t_main) / 1e6, (double)(mono_ns() - t_main) / 1e6);
    if (timed_out) {
        char t[64];
        float_repr(a->timeout, t, sizeof t);
        fprintf(stderr, "isolate: timed out after %s s; the sandbox was killed\n", t);
        return 124;
    }
    if (oom) {
        fprintf(stderr, "isolate: the sandbox ran out of memory (cgroup.memory_max = %s)\n", e.oom_text);
        return 137;
    }
    if (WIFSIGNALED(sts))
        return 128 + WTERMSIG(sts);
    return WEXITSTATUS(sts);

out:
    if (!ok) {
        if (g.n)
            cgroups_destroy(&g);
        if (lease_fd >= 0)
            close(lease_fd);
        lease_fd = -1;
    }
    return -1;
}

int main(int argc, char **argv)
{
    t_main = mono_ns();
    orig_argv = argv;
    const char *off = getenv("ISOLATE_NATIVE");
    if (argc < 3 || strcmp(argv[1], "run") != 0 || (off && strcmp(off, "0") == 0))
        fallback();
    struct args a;
    if (parse_run(argc, argv, &a) < 0)
        fallback();
    int rc = run(&a);
    if (rc < 0)
        fallback();
    return rc;
}
