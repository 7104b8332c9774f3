/* The on-disk plan cache: one format, written by Python (isolate/launch/plancache.py,
 * with the struct plan blob from _launch.plan_bytes) and read by the native `isolate`
 * command (_cli.c). Included by _launch.c after struct plan / struct mount_op.
 *
 * A cache file:
 *   header   char magic[8] = PC_MAGIC; u32 version = PC_VERSION; u32 total length;
 *            u64 pc_sum() of every byte after the header
 *   records  u32 tag; u32 length; length bytes      (until the total length)
 *
 * Every number is in this machine's byte order (the cache is per user, per host).
 * Strings in records are NUL-terminated inside their record. A reader refuses the
 * whole file at the first thing it does not expect.
 */
#ifndef ISOLATE_PLANCACHE_H
#define ISOLATE_PLANCACHE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PC_MAGIC "ISOLPLN\0"
#define PC_VERSION 2
#define PC_HEADER 24

enum pc_tag {
    PC_KEY = 1,         /* the canonical key (what the file name hashes): compared byte for byte */
    PC_DEP_FILE = 2,    /* path NUL content: the file must hold exactly this content */
    PC_DEP_STAT = 3,    /* u64 dev, u64 ino, u64 size, i64 mtime_ns, path NUL: stat must match */
    PC_DEP_ABSENT = 4,  /* path NUL: must not exist */
    PC_DEP_ENV = 5,     /* u32 present, name NUL value NUL: the caller's variable, as it was */
    PC_DEP_TYPE = 6,    /* u32 S_IFMT of lstat (0: absent), path NUL, symlink target NUL: a host path the
                           view was compiled from (a bind source, a symlink copied, a path hidden) */
    PC_PLAN = 10,       /* the struct plan blob (plan_serialize) */
    PC_LAUNCH = 11,     /* struct pc_launch */
    PC_INIT_PATH = 12,  /* isolate-init's path NUL */
    PC_CWD = 13,        /* the plan's cwd NUL */
    PC_ENV_KEEP = 14,   /* a name or glob NUL (repeated, in order) */
    PC_ENV_SET = 15,    /* name NUL value NUL (repeated, in order) */
    PC_CGROUP = 16,     /* parent dir NUL, v1 controller NUL, its mount point NUL, mount root NUL (all "" for v2),
                           then (file NUL value NUL)*: one per controller directory */
    PC_OOM_TEXT = 17,   /* what the out-of-memory message names as cgroup.memory_max NUL */
    PC_IDMAP = 18,      /* i32 op index, i32 plain (the filesystem refuses idmapping), source NUL */
};

struct pc_launch {
    int32_t use_init, pidns, die_with_parent, host_ids;
    int32_t inside_uid, inside_gid;
    int32_t cgroup_version;  /* 0: none, 1: v1, 2: v2 */
    int32_t env_clear;
    int32_t nops;            /* mount ops of the plan (for PC_IDMAP indexes) */
    int32_t reserved[7];
};

/* The header's checksum (against damage; whoever can write the file can write its sum):
 * FNV-1a 64's step over 8-byte words, the length in the seed, the tail zero-padded. Each
 * step is a bijection of the state, so a change of one word always changes the sum. Eight
 * times fewer multiplications than FNV-1a over bytes: 5 us instead of 35 for a 30 KB entry,
 * on every `isolate run`. plancache.checksum() is the same in Python. */
__attribute__((unused)) static uint64_t pc_sum(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)n, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 1099511628211ULL;
    }
    w = 0;
    memcpy(&w, p + i, n - i);
    return (h ^ w) * 1099511628211ULL;
}

__attribute__((unused)) static uint64_t pc_fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- writing a struct plan (the extension: plan_bytes) ------------------------------ */
struct pc_buf { unsigned char *p; size_t len, cap; int oom; };

static void pc_put(struct pc_buf *b, const void *d, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void pc_u32(struct pc_buf *b, uint32_t v) { pc_put(b, &v, sizeof v); }
static void pc_u64(struct pc_buf *b, uint64_t v) { pc_put(b, &v, sizeof v); }

/* NULL -> u32 0; else u32 len+1, the bytes, NUL */
static void pc_str(struct pc_buf *b, const char *s)
{
    if (!s) {
        pc_u32(b, 0);
        return;
    }
    size_t n = strlen(s);
    pc_u32(b, (uint32_t)n + 1);
    pc_put(b, s, n + 1);
}

static void pc_blob(struct pc_buf *b, const void *d, size_t n, int present)
{
    if (!present) {
        pc_u32(b, 0);
        return;
    }
    pc_u32(b, (uint32_t)n + 1);
    pc_put(b, d, n);
    pc_put(b, "", 1);
}

__attribute__((unused)) static int plan_serialize(const struct plan *p, struct pc_buf *b)
{
    if (p->netns_fd >= 0)
        return -1; /* an fd of this process: cannot be stored */
    pc_u64(b, p->clone_flags);
    pc_str(b, p->uid_map);
    pc_str(b, p->gid_map);
    pc_u32(b, (uint32_t)p->deny_setgroups);
    pc_u64(b, (uint64_t)p->set_uid);
    pc_u64(b, (uint64_t)p->set_gid);
    pc_u32(b, (uint32_t)p->become_root);
    pc_u32(b, (uint32_t)p->launch_ids);
    pc_u32(b, (uint32_t)p->clear_groups);
    pc_str(b, p->hostname);
    pc_u32(b, (uint32_t)p->loopback);
    pc_u32(b, (uint32_t)p->nrlimits);
    for (int i = 0; i < p->nrlimits; i++) {
        pc_u32(b, (uint32_t)p->rlimits[i].resource);
        pc_u64(b, (uint64_t)p->rlimits[i].lim.rlim_cur);
        pc_u64(b, (uint64_t)p->rlimits[i].lim.rlim_max);
    }
    pc_u32(b, (uint32_t)p->no_new_privs);
    pc_u32(b, (uint32_t)p->drop_caps);
    pc_u64(b, p->keep_caps);
    pc_u32(b, (uint32_t)p->last_cap);
    pc_blob(b, p->bpf, p->bpf_len, p->bpf != NULL);
    pc_u32(b, (uint32_t)p->use_init);
    pc_u32(b, (uint32_t)p->die_with_parent);
    pc_u32(b, (uint32_t)p->pidns);
    pc_u32(b, (uint32_t)p->nops);
    for (int i = 0; i < p->nops; i++) {
        const struct mount_op *op = &p->ops[i];
        pc_u32(b, (uint32_t)op->kind);
        pc_str(b, op->a);
        pc_str(b, op->b);
        pc_str(b, op->c);
        pc_blob(b, op->d, op->d_len, op->d != NULL);
        pc_u64(b, op->flags);
        pc_u64(b, (uint64_t)op->num);
    }
    pc_u32(b, (uint32_t)p->landlock);
    pc_u64(b, p->ll_handled_fs);
    pc_u64(b, p->ll_handled_net);
    pc_u64(b, p->ll_scoped);
    pc_u64(b, (uint64_t)p->ll_attr_size);
    pc_u32(b, (uint32_t)p->nll);
    for (int i = 0; i < p->nll; i++) {
        pc_str(b, p->ll_rules[i].path);
        pc_u64(b, p->ll_rules[i].access);
        pc_u32(b, (uint32_t)p->ll_rules[i].optional);
    }
    pc_u32(b, 0x504C414E); /* end mark */
    return b->oom ? -1 : 0;
}

/* ---- reading one (the native command; the extension's plan_check for tests) -------- */
struct pc_rd { const unsigned char *p; size_t len, off; int bad; };

static uint32_t rd_u32(struct pc_rd *r)
{
    uint32_t v = 0;
    if (r->bad || r->len - r->off < sizeof v) {
        r->bad = 1;
        return 0;
    }
    memcpy(&v, r->p + r->off, sizeof v);
    r->off += sizeof v;
    return v;
}

static uint64_t rd_u64(struct pc_rd *r)
{
    uint64_t v = 0;
    if (r->bad || r->len - r->off < sizeof v) {
        r->bad = 1;
        return 0;
    }
    memcpy(&v, r->p + r->off, sizeof v);
    r->off += sizeof v;
    return v;
}

/* A string or blob written by pc_str/pc_blob: a pointer into the buffer (NUL-terminated), or NULL. */
static const char *rd_blob(struct pc_rd *r, size_t *n)
{
    uint32_t m = rd_u32(r);
    if (n)
        *n = 0;
    if (r->bad || m == 0)
        return NULL;
    if (r->len - r->off < m || r->p[r->off + m - 1] != 0) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p + r->off;
    r->off += m;
    if (n)
        *n = m - 1;
    return s;
}

static const char *rd_str(struct pc_rd *r)
{
    size_t n;
    const char *s = rd_blob(r, &n);
    if (s && strlen(s) != n)
        r->bad = 1;
    return s;
}

/* Fill *p from buf (which must outlive it: strings point into it). 0, or -1 on anything
 * malformed. p->ops and p->ll_rules are malloc'd. */
__attribute__((unused)) static int plan_parse(const unsigned char *buf, size_t len, struct plan *p)
{
    struct pc_rd r = {buf, len, 0, 0};
    memset(p, 0, sizeof *p);
    p->netns_fd = -1;
    p->clone_flags = rd_u64(&r);
    p->uid_map = (char *)rd_str(&r);
    p->gid_map = (char *)rd_str(&r);
    p->deny_setgroups = (int)rd_u32(&r);
    p->set_uid = (long)rd_u64(&r);
    p->set_gid = (long)rd_u64(&r);
    p->become_root = (int)rd_u32(&r);
    p->launch_ids = (int)rd_u32(&r);
    p->clear_groups = (int)rd_u32(&r);
    p->hostname = (char *)rd_str(&r);
    p->loopback = (int)rd_u32(&r);
    uint32_t nr = rd_u32(&r);
    if (nr > MAX_RLIMITS)
        return -1;
    p->nrlimits = (int)nr;
    for (uint32_t i = 0; i < nr; i++) {
        p->rlimits[i].resource = (int)rd_u32(&r);
        p->rlimits[i].lim.rlim_cur = (rlim_t)rd_u64(&r);
        p->rlimits[i].lim.rlim_max = (rlim_t)rd_u64(&r);
    }
    p->no_new_privs = (int)rd_u32(&r);
    p->drop_caps = (int)rd_u32(&r);
    p->keep_caps = rd_u64(&r);
    p->last_cap = (int)rd_u32(&r);
    size_t bl;
    const char *bpf = rd_blob(&r, &bl);
    if (bpf) {
        if (bl == 0 || bl % sizeof(struct sock_filter) || bl / sizeof(struct sock_filter) > BPF_MAXINSNS)
            return -1;
        p->bpf = (unsigned char *)bpf;
        p->bpf_len = bl;
    }
    p->use_init = (int)rd_u32(&r);
    p->die_with_parent = (int)rd_u32(&r);
    p->pidns = (int)rd_u32(&r);
    uint32_t nops = rd_u32(&r);
    if (r.bad || nops > 65536)
        return -1;
    p->ops = calloc(nops + 1, sizeof *p->ops);
    if (!p->ops)
        return -1;
    p->nops = (int)nops;
    for (uint32_t i = 0; i < nops; i++) {
        struct mount_op *op = &p->ops[i];
        op->kind = (int)rd_u32(&r);
        op->a = rd_str(&r);
        op->b = rd_str(&r);
        op->c = rd_str(&r);
        op->d = rd_blob(&r, &op->d_len);
        op->flags = (unsigned long)rd_u64(&r);
        op->num = (long)rd_u64(&r);
    }
    p->landlock = (int)rd_u32(&r);
    p->ll_handled_fs = rd_u64(&r);
    p->ll_handled_net = rd_u64(&r);
    p->ll_scoped = rd_u64(&r);
    p->ll_attr_size = (size_t)rd_u64(&r);
    uint32_t nll = rd_u32(&r);
    if (r.bad || nll > 65536)
        return -1;
    p->ll_rules = calloc(nll + 1, sizeof *p->ll_rules);
    if (!p->ll_rules)
        return -1;
    p->nll = (int)nll;
    for (uint32_t i = 0; i < nll; i++) {
        p->ll_rules[i].path = rd_str(&r);
        p->ll_rules[i].access = rd_u64(&r);
        p->ll_rules[i].optional = (int)rd_u32(&r);
        if (!p->ll_rules[i].path)
            r.bad = 1;
    }
    if (rd_u32(&r) != 0x504C414E || r.bad || r.off != r.len)
        return -1;
    if (p->landlock && p->ll_attr_size > 64)
        return -1;
    return 0;
}

#endif
