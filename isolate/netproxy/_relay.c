/* isolate.netproxy._relay: the proxy's data path in C, without the interpreter lock.

   Gate (one per sandbox): the workers' loop, Gate.serve(): wait in the sandbox's epoll,
   accept, read the destination (the socket's own address under TPROXY), count the
   connection against max_connections, and serve it without Python when a route covers
   it (a decision proxy.py made before, kept as long as the host's answer for the name)
   and its first bytes name the route's name exactly; every other connection goes back
   to Python with what was peeked. The readings of first bytes (Host, SNI, proxy request
   line) are bounds-checked at every step and conservative: they say yes only where the
   Python ones give the same name (tests/netproxy/test_fast_path.py), else hand over.

   connect_pump(): the relay of a connection Python decided (connect, send what was read
   already, relay). pump(): the relay alone. peek(): the first bytes (MSG_PEEK) with a
   timeout. Bucket: a sandbox's bytes-per-second token bucket, shared by its connections
   (a mutex, no GIL), taken before every write; its sleep ends when `wake` is readable.

   The relay: each direction until its reader sees end of file, passed on as
   shutdown(SHUT_WR) to the other socket; it returns when both directions are done, on
   the first error of either socket, or when `wake` (readable once the proxy closes) is.
   Writes never block: a full socket waits in poll() with `wake`, so a peer that stops
   reading cannot keep it from returning.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROXY_PORT_ 3128   /* isolate/netproxy/netns.py: PROXY_PORT */

#define BUF_SIZE 65536

/* -- the token bucket ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    double rate;      /* bytes per second; 0 = no limit */
    double tokens;
    double t;         /* CLOCK_MONOTONIC seconds of the last refill */
} Bucket;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Take n bytes' worth of tokens, sleeping until there are enough (a request larger than
   one second's budget waits for a full bucket, then takes it all: the bucket goes
   negative and the next writers wait longer). The sleep ends early when `wake` (if >= 0)
   becomes readable: -1 then, else 0. The caller does not hold the GIL. */
static int bucket_take(Bucket *b, size_t n, int wake) {
    if (b == NULL || b->rate <= 0)
        return 0;
    for (;;) {
        double want, wait;
        pthread_mutex_lock(&b->lock);
        double now = now_s();
        b->tokens += (now - b->t) * b->rate;
        if (b->tokens > b->rate)
            b->tokens = b->rate;
        b->t = now;
        want = (double)n < b->rate ? (double)n : b->rate;
        if (b->tokens >= want) {
            b->tokens -= (double)n;
            pthread_mutex_unlock(&b->lock);
            return 0;
        }
        wait = (want - b->tokens) / b->rate;
        pthread_mutex_unlock(&b->lock);
        if (wake >= 0) {
            struct pollfd p = {wake, POLLIN, 0};
            int ms = (int)(wait * 1000) + 1;
            if (poll(&p, 1, ms) > 0)
                return -1;
        } else {
            struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        }
    }
}

static int Bucket_init(Bucket *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"rate", NULL};
    double rate = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|d", names, &rate))
        return -1;
    if (rate < 0) {
        PyErr_SetString(PyExc_ValueError, "Bucket: rate must be >= 0 (bytes per second; 0 = no limit)");
        return -1;
    }
    self->rate = rate;
    self->tokens = rate;
    self->t = now_s();
    return 0;
}

static PyObject *Bucket_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Bucket *self = (Bucket *)type->tp_alloc(type, 0);
    if (self != NULL)
        pthread_mutex_init(&self->lock, NULL);
    return (PyObject *)self;
}

static void Bucket_dealloc(Bucket *self) {
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Bucket_take(Bucket *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "Bucket.take: n must be >= 0");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    bucket_take(self, (size_t)n, -1);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Bucket_get_rate(Bucket *self, void *closure) {
    return PyFloat_FromDouble(self->rate);
}

static PyMethodDef Bucket_methods[] = {
    {"take", (PyCFunction)Bucket_take, METH_O, "take(n): wait until n bytes may pass, then count them"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Bucket_getset[] = {
    {"rate", (getter)Bucket_get_rate, NULL, "bytes per second (0 = no limit)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BucketType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "isolate.netproxy._relay.Bucket",
    .tp_basicsize = sizeof(Bucket),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bucket(rate=0): a token bucket of `rate` bytes per second (0 = no limit), shared by threads",
    .tp_new = Bucket_new,
    .tp_init = (initproc)Bucket_init,
    .tp_dealloc = (destructor)Bucket_dealloc,
    .tp_methods = Bucket_methods,
    .tp_getset = Bucket_getset,
};

/* -- the relay ------------------------------------------------------------- */

/* Write all of buf to fd without blocking; a full socket waits in poll with `wake`.
   0 = written, -1 = error or wake. */
static int write_all(int fd, const char *buf, size_t len, int wake) {
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p[2] = {{fd, POLLOUT, 0}, {wake, POLLIN, 0}};
            int n = poll(p, wake >= 0 ? 2 : 1, -1);
            if (n < 0 && errno != EINTR)
                return -1;
            if (wake >= 0 && p[1].revents)
                return -1;
            if (p[0].revents & (POLLERR | POLLNVAL))
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* 0 = ended normally (both directions at end of file), 1 = a socket failed, 2 = woken. */
static int relay(int a, int b, int wake, Bucket *bucket, char *buf) {
    int open_[2] = {1, 1};   /* still reading from a, from b */
    int fds[2] = {a, b};
    for (;;) {
        struct pollfd p[3];
        int idx[3], n = 0;
        for (int i = 0; i < 2; i++)
            if (open_[i]) {
                p[n].fd = fds[i];
                p[n].events = POLLIN;
                p[n].revents = 0;
                idx[n++] = i;
            }
        if (n == 0)
            return 0;
        int w = n;
        if (wake >= 0) {
            p[n].fd = wake;
            p[n].events = POLLIN;
            p[n].revents = 0;
            n++;
        }
        int r = poll(p, (nfds_t)n, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (wake >= 0 && p[w].revents)
            return 2;
        for (int k = 0; k < w; k++) {
            if (!p[k].revents)
                continue;
            int i = idx[k], src = fds[i], dst = fds[1 - i];
            /* With a limit, at most one second's budget at a time (the burst it allows). */
            size_t want = BUF_SIZE;
            if (bucket != NULL && bucket->rate > 0 && bucket->rate < (double)BUF_SIZE)
                want = bucket->rate >= 1 ? (size_t)bucket->rate : 1;
            ssize_t got = recv(src, buf, want, MSG_DONTWAIT);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    continue;
                return 1;
            }
            if (got == 0) {
                open_[i] = 0;
                if (!open_[1 - i])
                    return 0;   /* both at end of file: the caller closes both (no shutdown needed) */
                shutdown(dst, SHUT_WR);
                continue;
            }
            if (bucket_take(bucket, (size_t)got, wake) < 0)
                return 2;
            if (write_all(dst, buf, (size_t)got, wake) < 0)
                return 1;
        }
    }
}

static PyObject *relay_pump(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"a", "b", "wake", "bucket", NULL};
    int a, b, wake = -1;
    PyObject *bucket = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii|iO", names, &a, &b, &wake, &bucket))
        return NULL;
    if (a < 0 || b < 0) {
        PyErr_SetString(PyExc_ValueError, "pump: a and b must be open file descriptors");
        return NULL;
    }
    if (bucket != Py_None && !PyObject_TypeCheck(bucket, &BucketType)) {
        PyErr_SetString(PyExc_TypeError, "pump: bucket must be a Bucket or None");
        return NULL;
    }
    char *buf = malloc(BUF_SIZE);
    if (buf == NULL)
        return PyErr_NoMemory();
    int rc;
    Py_INCREF(bucket);
    Py_BEGIN_ALLOW_THREADS
    rc = relay(a, b, wake, bucket == Py_None ? NULL : (Bucket *)bucket, buf);
    Py_END_ALLOW_THREADS
    Py_DECREF(bucket);
    free(buf);
    return PyLong_FromLong(rc);
}


/* -- accepting ------------------------------------------------------------- */

static long ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* The address a captured connection was sent to: TPROXY (isolate/netproxy/netns.py)
   hands the connection to the listener unchanged, so it is the accepted socket's own
   address (no NAT, no conntrack: SO_ORIGINAL_DST has nothing to say). 0 = ok. */
static int original_dst(int fd, int family, char *ip, size_t iplen, int *port) {
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &l) < 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        *port = ntohs(a->sin_port);
        return inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)iplen) ? 0 : -1;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    *port = ntohs(a->sin6_port);
    return inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)iplen) ? 0 : -1;
}

/* Wait (the caller has released the GIL) in the epoll `epfd`, whose fds are non-blocking
   listening sockets and `wake`, and accept one connection: 1 (fd, family, ip, port set;
   the socket is blocking, close-on-exec, TCP_NODELAY), 0 after timeout_ms (-1: none) with
   nothing accepted, -1 when `wake` is readable, -2 on an error (errno). */
static int accept_one(int epfd, int wake, int timeout_ms, int *fd, int *family, char *ip, size_t iplen, int *port) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct epoll_event ev[4];
        int left = timeout_ms;
        if (timeout_ms >= 0) {
            left = timeout_ms - (int)ms_since(&t0);
            if (left < 0)
                left = 0;
        }
        int n = epoll_wait(epfd, ev, 4, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -2;
        }
        if (n == 0)
            return 0;
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd == wake)
                return -1;
        for (int i = 0; i < n; i++) {
            struct sockaddr_storage peer;
            socklen_t pl = sizeof peer;
            int c = accept4(ev[i].data.fd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
            if (c < 0)
                continue;   /* another worker took it (EAGAIN), or the client is gone already */
            *family = peer.ss_family;   /* TCP_NODELAY: from the listener */
            if (original_dst(c, *family, ip, iplen, port) < 0) {
                close(c);
                continue;
            }
            *fd = c;
            /* More than one ready: the others stay queued for the next call (level-triggered). */
            return 1;
        }
        if (timeout_ms >= 0 && ms_since(&t0) >= timeout_ms)
            return 0;
    }
}

/* recv(MSG_PEEK) of up to max bytes, waiting at most timeout_ms for the first: > 0 bytes,
   0 = nothing within the time, -1 = failed or closed without sending. */
static ssize_t peek_fd(int fd, char *buf, size_t max, int timeout_ms) {
    for (;;) {
        ssize_t got = recv(fd, buf, max, MSG_PEEK | MSG_DONTWAIT);
        if (got > 0)
            return got;
        if (got == 0)
            return -1;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, timeout_ms);
        if (n == 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* peek(fd, timeout_ms, max): up to `max` of the first bytes the client sent, left in the
   socket (MSG_PEEK); b"" when it sends nothing within timeout_ms; None when the socket
   failed or the client closed without sending. */
static PyObject *relay_peek(PyObject *self, PyObject *args) {
    int fd, timeout_ms;
    Py_ssize_t max;
    if (!PyArg_ParseTuple(args, "iin", &fd, &timeout_ms, &max))
        return NULL;
    if (max <= 0 || max > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "peek: max must be 1..1048576");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, max);
    if (out == NULL)
        return NULL;
    ssize_t got = 0;
    int timed_out = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        got = recv(fd, PyBytes_AS_STRING(out), (size_t)max, MSG_PEEK | MSG_DONTWAIT);
        if (got >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            break;
        if (errno == EINTR)
            continue;
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, timeout_ms);
        if (n == 0) {
            timed_out = 1;
            break;
        }
        if (n < 0 && errno != EINTR) {
            got = -1;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (timed_out) {
        Py_DECREF(out);
        return PyBytes_FromStringAndSize("", 0);
    }
    if (got <= 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    if (_PyBytes_Resize(&out, got) < 0)
        return NULL;
    return out;
}

/* A connected socket to ip:port with first[0..len) written to it, or -1 (-2: `wake` became
   readable); waits at most timeout_ms in all, not after `wake`. With bytes to write, they
   go as soon as the connection is up, without waiting for it apart (on loopback it is up
   when connect() returns): a failed connect shows as a failed write, before which nothing
   was sent. */
static int connect_one(const char *ip, int port, int timeout_ms, int wake, const char *first, size_t len) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    int family;
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1)
            return -1;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &a->sin_addr) != 1)
            return -1;
        sl = sizeof *a;
    }
    int s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int pending = 0;    /* connect() still in progress, as far as we know */
    if (connect(s, (struct sockaddr *)&ss, sl) < 0) {
        if (errno != EINPROGRESS) {
            close(s);
            return -1;
        }
        pending = 1;
    }
    size_t off = 0;
    for (;;) {
        if (off == len && !pending)
            return s;
        if (off < len) {
            ssize_t w = send(s, first + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                pending = 0;    /* it is connected */
                continue;
            }
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                close(s);       /* refused, reset: nothing was sent, or the peer is gone */
                return -1;
            }
        }
        int left = timeout_ms - (int)ms_since(&t0);
        if (left <= 0) {
            close(s);
            return -1;
        }
        struct pollfd p[2] = {{s, POLLOUT, 0}, {wake, POLLIN, 0}};
        int n = poll(p, wake >= 0 ? 2 : 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && wake >= 0 && p[1].revents) {
            close(s);
            return -2;
        }
        if (n <= 0 || (p[0].revents & (POLLERR | POLLHUP | POLLNVAL))) {
            close(s);
            return -1;
        }
        if (pending && off == len) {
            int e = 0;
            socklen_t el = sizeof e;
            if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
                close(s);
                return -1;
            }
            pending = 0;
        }
    }
}

/* Take exactly n bytes from fd (they are in it: peeked before). 0 = taken. */
static int consume(int fd, char *buf, size_t n) {
    size_t have = 0;
    while (have < n) {
        ssize_t k = recv(fd, buf + have, n - have, MSG_DONTWAIT);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            return -1;
        }
        have += (size_t)k;
    }
    return 0;
}

/* Connect to the first of ips[0..n) that answers, writing send[0..len) first (or, with
   `pending`, the first `pending` bytes waiting in conn, peeked already into buf: taken
   from conn once sent), relay conn <-> it and close it: -1 = no address answered
   (nothing sent, nothing taken from conn), else relay()'s answer (2: woken). No GIL. */
static int connect_send_relay(int conn, const char *const *ips, int n, int port, const void *send, size_t len,
                              int wake, Bucket *b, int timeout_ms, char *buf, size_t pending) {
    int up = -1, rc;
    if (pending > 0) {
        if (pending > BUF_SIZE)
            return -1;
        send = buf;
        len = pending;
    }
    if (len > 0 && bucket_take(b, len, wake) < 0)
        return 2;
    for (int i = 0; i < n && up < 0; i++) {
        up = connect_one(ips[i], port, timeout_ms, wake, send, len);
        if (up == -2)
            return 2;
    }
    if (up < 0)
        return -1;
    if (pending > 0 && consume(conn, buf, pending) < 0)
        rc = 1;
    else
        rc = relay(conn, up, wake, b, buf);
    close(up);
    return rc;
}

/* connect_pump(conn, addrs, port, send, wake, bucket, timeout_ms): connect from here to the
   first of `addrs` (IP literals) that answers within timeout_ms each, write `send` (bytes
   the proxy read from the client already) to it, then pump(conn, upstream); the upstream
   socket is closed before returning. -1 = no address answered (nothing was sent), else
   pump's answer. All of it without the GIL. */
static PyObject *relay_connect_pump(PyObject *self, PyObject *args) {
    int conn, port, wake, timeout_ms;
    PyObject *addrs, *bucket;
    Py_buffer send;
    if (!PyArg_ParseTuple(args, "iO!iy*iOi", &conn, &PyList_Type, &addrs, &port, &send, &wake, &bucket, &timeout_ms))
        return NULL;
    if (bucket != Py_None && !PyObject_TypeCheck(bucket, &BucketType)) {
        PyBuffer_Release(&send);
        PyErr_SetString(PyExc_TypeError, "connect_pump: bucket must be a Bucket or None");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(addrs);
    char **ips = calloc((size_t)n + 1, sizeof *ips);
    char *buf = malloc(BUF_SIZE);
    if (ips == NULL || buf == NULL) {
        free(ips);
        free(buf);
        PyBuffer_Release(&send);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *a = PyUnicode_AsUTF8(PyList_GET_ITEM(addrs, i));
        if (a == NULL || (ips[i] = strdup(a)) == NULL) {
            for (Py_ssize_t j = 0; j < i; j++)
                free(ips[j]);
            free(ips);
            free(buf);
            PyBuffer_Release(&send);
            return a == NULL ? NULL : PyErr_NoMemory();
        }
    }
    int rc;
    Bucket *b = bucket == Py_None ? NULL : (Bucket *)bucket;
    Py_INCREF(bucket);
    Py_BEGIN_ALLOW_THREADS
    rc = connect_send_relay(conn, (const char *const *)ips, (int)n, port, send.buf, (size_t)send.len, wake, b,
                            timeout_ms, buf, 0);
    Py_END_ALLOW_THREADS
    Py_DECREF(bucket);
    for (Py_ssize_t i = 0; i < n; i++)
        free(ips[i]);
    free(ips);
    free(buf);
    PyBuffer_Release(&send);
    return PyLong_FromLong(rc);
}


/* -- the gate: a sandbox's counters, its routes and the fast path ---------------------

   One Gate per sandbox holds what its worker threads share without the GIL: the
   connections open (at most max_open), the workers alive and waiting (spare ones are
   kept: when a connection leaves fewer than `spare` waiting, a byte on spawn_fd asks the
   sandbox's serving thread for another), and the routes: decisions the Python proxy
   made already, kept for as long as the host's answer for the name (ttl):
     "T<address>|<port>"  a captured connection to a synthetic address of the sandbox's
                          DNS: the name behind it, allowed on that port, and the host
                          addresses to connect to;
     "E<name>|<port>"     an absolute-form http:// request through HTTP_PROXY.
   Gate.serve() accepts and serves connections itself while a route covers them and the
   client's first bytes name exactly the route's name (HTTP Host, TLS SNI, the URL of a
   proxy request); it hands every other connection to Python (which decides, refuses and
   records), so the fast path never refuses and never allows what Python has not. */

#define MAX_ROUTES 256
#define MAX_ROUTE_ADDRS 8
#define ROUTE_KEY 300
#define ROUTE_NAME 256

typedef struct {
    char key[ROUTE_KEY];
    char name[ROUTE_NAME];
    char addrs[MAX_ROUTE_ADDRS][INET6_ADDRSTRLEN];
    int naddrs;
    double expires;
} Route;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    long open, max_open, idle, workers, max_workers, spare;
    long served_fast;
    Route *routes;
    int nroutes;
} Gate;

static PyObject *Gate_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Gate *self = (Gate *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    self->routes = calloc(MAX_ROUTES, sizeof(Route));
    if (self->routes == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static int Gate_init(Gate *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"max_open", "spare", NULL};
    long max_open, spare;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ll", names, &max_open, &spare))
        return -1;
    if (max_open < 0 || spare < 1) {
        PyErr_SetString(PyExc_ValueError, "Gate: max_open must be >= 0 and spare >= 1");
        return -1;
    }
    self->max_open = max_open;
    self->spare = spare;
    self->max_workers = max_open + spare;
    return 0;
}

static void Gate_dealloc(Gate *self) {
    pthread_mutex_destroy(&self->lock);
    free(self->routes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A connection was accepted: count it (unless over max_open) and its worker as busy.
   *short_ = a worker should be started. Returns 1 when over the limit. Lock held by caller? no. */
static int gate_take(Gate *g, int *short_) {
    pthread_mutex_lock(&g->lock);
    int over = g->open >= g->max_open;
    if (!over)
        g->open++;
    g->idle--;
    *short_ = g->idle < g->spare && g->workers < g->max_workers;
    pthread_mutex_unlock(&g->lock);
    return over;
}

static void gate_done(Gate *g, int over) {
    pthread_mutex_lock(&g->lock);
    if (!over)
        g->open--;
    g->idle++;
    pthread_mutex_unlock(&g->lock);
}

/* Copy the route `key` out (under the lock), if it has not expired. */
static int gate_route(Gate *g, const char *key, Route *out) {
    int found = 0;
    double now = now_s();
    pthread_mutex_lock(&g->lock);
    for (int i = 0; i < g->nroutes; i++)
        if (strcmp(g->routes[i].key, key) == 0) {
            if (g->routes[i].expires > now) {
                *out = g->routes[i];
                found = 1;
            }
            break;
        }
    pthread_mutex_unlock(&g->lock);
    return found;
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x0b || c == 0x0c; }

/* [*b, *e) without the ASCII whitespace around it (as bytes.strip()). */
static void strip(const unsigned char **b, const unsigned char **e) {
    while (*b < *e && is_ws(**b))
        (*b)++;
    while (*e > *b && is_ws(*(*e - 1)))
        (*e)--;
}

static const unsigned char *find(const unsigned char *b, const unsigned char *e, const char *needle) {
    size_t n = strlen(needle);
    for (const unsigned char *p = b; p + n <= e; p++)
        if (memcmp(p, needle, n) == 0)
            return p;
    return NULL;
}

/* name[0..n) (a Host value without its port, or an SNI) equals `want`: ASCII only, case
   folded; trailing dots dropped when `dots` (as the Python proxy does for Host). */
static int name_is(const unsigned char *b, const unsigned char *e, const char *want, int dots) {
    if (dots)
        while (e > b && e[-1] == '.')
            e--;
    size_t n = (size_t)(e - b);
    if (n == 0 || n != strlen(want))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        if (c >= 0x80 || c < 0x21)
            return 0;
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)want[i])
            return 0;
    }
    return 1;
}

/* The head [b, e) (without the blank line) has, as its first Host header, exactly the name
   `want` (with an optional valid port). 0 for anything else: no Host, another name, a
   Host the Python proxy would read otherwise (no colon, brackets, a bad port). */
static int host_is(const unsigned char *b, const unsigned char *e, const char *want) {
    const unsigned char *line = find(b, e, "\r\n");
    if (line == NULL)
        return 0;
    line += 2;
    while (line <= e) {
        const unsigned char *end = find(line, e, "\r\n");
        if (end == NULL)
            end = e;
        const unsigned char *colon = memchr(line, ':', (size_t)(end - line));
        const unsigned char *kb = line, *ke = colon ? colon : end;
        strip(&kb, &ke);
        if (ke - kb == 4 && strncasecmp((const char *)kb, "host", 4) == 0) {
            if (colon == NULL)
                return 0;
            const unsigned char *vb = colon + 1, *ve = end;
            strip(&vb, &ve);
            if (vb == ve || *vb == '[')
                return 0;
            const unsigned char *pc = NULL;
            for (const unsigned char *q = vb; q < ve; q++)
                if (*q == ':')
                    pc = q;
            if (pc != NULL) {
                long port = 0;
                if (pc + 1 == ve || ve - (pc + 1) > 5)
                    return 0;
                for (const unsigned char *q = pc + 1; q < ve; q++) {
                    if (*q < '0' || *q > '9')
                        return 0;
                    port = port * 10 + (*q - '0');
                }
                if (port < 1 || port > 65535)
                    return 0;
                ve = pc;
            }
            return name_is(vb, ve, want, 1);
        }
        if (end == e)
            break;
        line = end + 2;
    }
    return 0;
}

static unsigned u16(const unsigned char *d) { return ((unsigned)d[0] << 8) | d[1]; }

/* A complete TLS record holding a ClientHello whose first host_name SNI is `want`. */
static int sni_is(const unsigned char *d, size_t n, const char *want) {
    if (n < 6 || d[0] != 0x16 || n < 5 + (size_t)u16(d + 3) || d[5] != 1)
        return 0;
    size_t p = 43;
    if (p >= n)
        return 0;
    p += 1 + d[p];                          /* session id */
    if (p + 2 > n)
        return 0;
    p += 2 + u16(d + p);                    /* cipher suites */
    if (p >= n)
        return 0;
    p += 1 + d[p];                          /* compression */
    if (p + 2 > n)
        return 0;
    size_t end = p + 2 + u16(d + p);
    if (end > n)
        return 0;
    p += 2;
    while (p + 4 <= end) {
        unsigned etype = u16(d + p), elen = u16(d + p + 2);
        if (etype == 0) {
            size_t q = p + 6;
            if (q + 3 > n)
                return 0;
            if (d[q] == 0) {
                size_t len = u16(d + q + 1);
                if (q + 3 + len > n)
                    return 0;
                return name_is(d + q + 3, d + q + 3 + len, want, 0);
            }
        }
        p += 4 + elen;
    }
    return 0;
}

/* A captured connection's first bytes [d, d+n) name exactly `want` (Host or SNI). */
static int first_bytes_name(const unsigned char *d, size_t n, const char *want) {
    if (n == 0)
        return 0;
    if (d[0] == 0x16)
        return sni_is(d, n, want);
    const unsigned char *blank = find(d, d + n, "\r\n\r\n");
    return blank != NULL && host_is(d, blank, want);
}

/* A proxy request (absolute-form http://, not CONNECT) in [d, d+n): its route key
   ("E<host>|<port>", the host lower-cased) in key, the length of its head in *head_len.
   The request line is METHOD SP http://HOST[:PORT][/PATH] SP VERSION, the Host header
   names HOST; *port_out: PORT (80 when absent). *path_b, *path_e: PATH (after its slash), *ver_b: the version; 0 = not one. */
static int proxy_request(const unsigned char *d, size_t n, char *key, size_t keylen, char *host, size_t hostlen,
                         int *port_out, const unsigned char **method_e, const unsigned char **path_b, const unsigned char **path_e,
                         const unsigned char **ver_b, const unsigned char **line_e) {
    const unsigned char *blank = find(d, d + n, "\r\n\r\n");
    if (blank == NULL)
        return 0;
    const unsigned char *le = find(d, blank + 2, "\r\n");
    const unsigned char *sp1 = memchr(d, ' ', (size_t)(le - d));
    if (sp1 == NULL || sp1 == d)
        return 0;
    const unsigned char *sp2 = memchr(sp1 + 1, ' ', (size_t)(le - sp1 - 1));
    if (sp2 == NULL || memchr(sp2 + 1, ' ', (size_t)(le - sp2 - 1)) != NULL)
        return 0;
    for (const unsigned char *q = d; q < sp1; q++)
        if (!((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z')))
            return 0;
    if (sp1 - d == 7 && strncasecmp((const char *)d, "CONNECT", 7) == 0)
        return 0;
    const unsigned char *t = sp1 + 1;
    if (sp2 - t < 8 || strncasecmp((const char *)t, "http://", 7) != 0)
        return 0;
    const unsigned char *hb = t + 7, *he = memchr(hb, '/', (size_t)(sp2 - hb));
    const unsigned char *pb = he ? he + 1 : sp2;
    if (he == NULL)
        he = sp2;
    if (hb == he || *hb == '[')
        return 0;
    long port = 80;
    const unsigned char *pc = NULL;
    for (const unsigned char *q = hb; q < he; q++)
        if (*q == ':')
            pc = q;
    if (pc != NULL) {
        if (pc + 1 == he || he - (pc + 1) > 5)
            return 0;
        port = 0;
        for (const unsigned char *q = pc + 1; q < he; q++) {
            if (*q < '0' || *q > '9')
                return 0;
            port = port * 10 + (*q - '0');
        }
        if (port < 1 || port > 65535)
            return 0;
    }
    const unsigned char *ne = pc ? pc : he;
    size_t hl = (size_t)(ne - hb);
    if (hl == 0 || hl >= hostlen)
        return 0;
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = hb[i];
        if (c >= 0x80 || c < 0x21)
            return 0;
        host[i] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
    }
    host[hl] = 0;
    if (!host_is(d, blank, host) || host[hl - 1] == '.')
        return 0;
    if ((size_t)snprintf(key, keylen, "E%s|%ld", host, port) >= keylen)
        return 0;
    *port_out = (int)port;
    *method_e = sp1;
    *path_b = pb;
    *path_e = sp2;
    *ver_b = sp2 + 1;
    *line_e = le;
    return 1;
}

/* Serve one accepted connection by its route if it has one and its first bytes agree:
   1 = served (and closed), 0 = not (nothing was sent either way; *first / *nfirst: what was
   peeked, for Python). No GIL. */
static int serve_fast(Gate *g, int fd, const char *ip, int port, int wake, Bucket *b, int peek_ms,
                      int connect_ms, char *buf, size_t peek_max, ssize_t *nfirst) {
    char key[ROUTE_KEY];
    Route r;
    *nfirst = -2;       /* not peeked */
    int explicit_ = port == PROXY_PORT_ && (strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0);
    if (!explicit_) {
        if ((size_t)snprintf(key, sizeof key, "T%s|%d", ip, port) >= sizeof key || !gate_route(g, key, &r))
            return 0;
    }
    ssize_t got = peek_fd(fd, buf, peek_max, peek_ms);
    *nfirst = got;
    if (got <= 0)
        return 0;
    const char *ips[MAX_ROUTE_ADDRS];
    if (!explicit_) {
        if (!first_bytes_name((const unsigned char *)buf, (size_t)got, r.name))
            return 0;
        for (int i = 0; i < r.naddrs; i++)
            ips[i] = r.addrs[i];
        if (connect_send_relay(fd, ips, r.naddrs, port, NULL, 0, wake, b, connect_ms, buf, (size_t)got) == -1)
            return 0;
        close(fd);
        return 1;
    }
    /* Through HTTP_PROXY: an absolute-form request whose route is known; its head is
       read, and sent on with the request line in origin form (METHOD /PATH VERSION). */
    char host[ROUTE_NAME];
    const unsigned char *me, *pb, *pe, *vb, *le;
    const unsigned char *d = (const unsigned char *)buf;
    int target_port;
    if (!proxy_request(d, (size_t)got, key, sizeof key, host, sizeof host, &target_port, &me, &pb, &pe, &vb, &le) ||
        !gate_route(g, key, &r))
        return 0;
    for (int i = 0; i < r.naddrs; i++)
        ips[i] = r.addrs[i];
    /* The rewritten head: METHOD " /" PATH " " VERSION, then the rest as it came. */
    size_t nm = (size_t)(me - d), np = (size_t)(pe - pb), nv = (size_t)(le - vb), nrest = (size_t)got - (size_t)(le - d);
    size_t total = nm + 2 + np + 1 + nv + nrest;
    char *out = malloc(total);
    if (out == NULL)
        return 0;
    char *o = out;
    memcpy(o, d, nm), o += nm;
    memcpy(o, " /", 2), o += 2;
    memcpy(o, pb, np), o += np;
    *o++ = ' ';
    memcpy(o, vb, nv), o += nv;
    memcpy(o, le, nrest);
    /* Connect and send first, then take the client's bytes: when no address answers,
       Python tries again and records it, and the client's bytes must still be there. */
    int up = -1;
    if (bucket_take(b, total, wake) < 0) {
        free(out);
        close(fd);
        return 1;       /* closing */
    }
    for (int i = 0; i < r.naddrs && up < 0; i++) {
        up = connect_one(ips[i], target_port, connect_ms, wake, out, total);
        if (up == -2)
            break;
    }
    free(out);
    if (up == -2) {
        close(fd);
        return 1;       /* closing */
    }
    if (up < 0)
        return 0;
    if (consume(fd, buf, (size_t)got) == 0)
        relay(fd, up, wake, b, buf);
    close(up);
    close(fd);
    return 1;
}

/* Gate.serve(epfd, wake, spawn_fd, idle_ms, peek_ms, peek_max, connect_ms, bucket): the
   loop of one worker thread, without the GIL: accept, count, serve by a route, again.
   Returns None after idle_ms with nothing accepted, -1 when `wake` is readable, or a
   connection for Python: (fd, family, address, port, over the limit?, first bytes peeked
   or None when not peeked / b"" when none came / False when the client failed); Python
   calls Gate.done(over) when it is finished with it. */
static PyObject *Gate_serve(Gate *self, PyObject *args) {
    int epfd, wake, spawn_fd, idle_ms, peek_ms, connect_ms;
    Py_ssize_t peek_max;
    PyObject *bucket;
    if (!PyArg_ParseTuple(args, "iiiiiniO", &epfd, &wake, &spawn_fd, &idle_ms, &peek_ms, &peek_max, &connect_ms,
                          &bucket))
        return NULL;
    if (bucket != Py_None && !PyObject_TypeCheck(bucket, &BucketType)) {
        PyErr_SetString(PyExc_TypeError, "serve: bucket must be a Bucket or None");
        return NULL;
    }
    if (peek_max <= 0 || peek_max > BUF_SIZE) {
        PyErr_SetString(PyExc_ValueError, "serve: peek_max must be 1..65536");
        return NULL;
    }
    char *buf = malloc(BUF_SIZE);
    if (buf == NULL)
        return PyErr_NoMemory();
    Bucket *b = bucket == Py_None ? NULL : (Bucket *)bucket;
    int rc, fd = -1, family = 0, port = 0, over = 0, err = 0;
    ssize_t nfirst = -2;
    char ip[INET6_ADDRSTRLEN] = "";
    Py_INCREF(bucket);
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        rc = accept_one(epfd, wake, idle_ms, &fd, &family, ip, sizeof ip, &port);
        if (rc != 1) {
            err = errno;
            break;
        }
        int short_ = 0;
        over = gate_take(self, &short_);
        if (short_) {
            char c = 's';
            (void)!write(spawn_fd, &c, 1);
        }
        if (over) {
            nfirst = -2;
            break;
        }
        if (!serve_fast(self, fd, ip, port, wake, b, peek_ms, connect_ms, buf, (size_t)peek_max, &nfirst))
            break;
        pthread_mutex_lock(&self->lock);
        self->served_fast++;
        pthread_mutex_unlock(&self->lock);
        gate_done(self, 0);
        fd = -1;
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(bucket);
    PyObject *out = NULL;
    if (rc == 1) {
        PyObject *first;
        if (nfirst == -2) {
            first = Py_None;
            Py_INCREF(first);
        } else if (nfirst < 0) {
            first = Py_False;
            Py_INCREF(first);
        } else {
            first = PyBytes_FromStringAndSize(buf, nfirst);
        }
        if (first != NULL)
            out = Py_BuildValue("(iisiON)", fd, family, ip, port, over ? Py_True : Py_False, first);
        if (out == NULL) {
            close(fd);
            gate_done(self, over);
        }
    } else if (rc == -1) {
        out = PyLong_FromLong(-1);
    } else if (rc == 0) {
        out = Py_None;
        Py_INCREF(out);
    } else {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    free(buf);
    return out;
}

static PyObject *Gate_done(Gate *self, PyObject *arg) {
    int over = PyObject_IsTrue(arg);
    if (over < 0)
        return NULL;
    gate_done(self, over);
    Py_RETURN_NONE;
}

/* reserve_worker(): True (and the worker counted as alive and waiting) when one more
   should be started: fewer than `spare` wait and fewer than max_open + spare are alive. */
static PyObject *Gate_reserve_worker(Gate *self, PyObject *unused) {
    int yes;
    pthread_mutex_lock(&self->lock);
    yes = self->idle < self->spare && self->workers < self->max_workers;
    if (yes) {
        self->idle++;
        self->workers++;
    }
    pthread_mutex_unlock(&self->lock);
    return PyBool_FromLong(yes);
}

/* retire_idle(): True (and the worker no longer counted as waiting) when a worker that
   found nothing to do may end: more than `spare` wait. */
static PyObject *Gate_retire_idle(Gate *self, PyObject *unused) {
    int yes;
    pthread_mutex_lock(&self->lock);
    yes = self->idle > self->spare;
    if (yes)
        self->idle--;
    pthread_mutex_unlock(&self->lock);
    return PyBool_FromLong(yes);
}

/* worker_gone(): a worker ended (not waiting any more: its idle count was taken back
   already, or it ends while waiting: waiting=True); the workers left. */
static PyObject *Gate_worker_gone(Gate *self, PyObject *arg) {
    int waiting = PyObject_IsTrue(arg);
    if (waiting < 0)
        return NULL;
    long left;
    pthread_mutex_lock(&self->lock);
    self->workers--;
    if (waiting)
        self->idle--;
    left = self->workers;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLong(left);
}

/* add_route(key, name, addrs, ttl): connections that `key` names go to `addrs` for ttl seconds. */
static PyObject *Gate_add_route(Gate *self, PyObject *args) {
    const char *key, *name;
    PyObject *addrs;
    double ttl;
    if (!PyArg_ParseTuple(args, "ssO!d", &key, &name, &PyList_Type, &addrs, &ttl))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(addrs);
    if (strlen(key) >= ROUTE_KEY || strlen(name) >= ROUTE_NAME || n < 1 || n > MAX_ROUTE_ADDRS || ttl <= 0)
        Py_RETURN_FALSE;   /* not kept: such connections go through Python */
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c >= 0x80 || (unsigned char)*c < 0x21 || (*c >= 'A' && *c <= 'Z'))
            Py_RETURN_FALSE;
    Route r;
    memset(&r, 0, sizeof r);
    strcpy(r.key, key);
    strcpy(r.name, name);
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *a = PyUnicode_AsUTF8(PyList_GET_ITEM(addrs, i));
        if (a == NULL)
            return NULL;
        if (strlen(a) >= INET6_ADDRSTRLEN)
            Py_RETURN_FALSE;
        strcpy(r.addrs[i], a);
    }
    r.naddrs = (int)n;
    double now = now_s();
    r.expires = now + ttl;
    pthread_mutex_lock(&self->lock);
    int slot = -1;
    for (int i = 0; i < self->nroutes; i++)
        if (strcmp(self->routes[i].key, key) == 0 || self->routes[i].expires <= now) {
            slot = i;
            if (strcmp(self->routes[i].key, key) == 0)
                break;
        }
    if (slot < 0)
        slot = self->nroutes < MAX_ROUTES ? self->nroutes++ : 0;
    self->routes[slot] = r;
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_TRUE;
}

static PyObject *Gate_counts(Gate *self, PyObject *unused) {
    pthread_mutex_lock(&self->lock);
    PyObject *r = Py_BuildValue("{sl,sl,sl,sl,si}", "open", self->open, "idle", self->idle, "workers", self->workers,
                                "served_fast", self->served_fast, "routes", self->nroutes);
    pthread_mutex_unlock(&self->lock);
    return r;
}

static PyMethodDef Gate_methods[] = {
    {"serve", (PyCFunction)Gate_serve, METH_VARARGS,
     "serve(epfd, wake, spawn_fd, idle_ms, peek_ms, peek_max, connect_ms, bucket) -> None | -1 | "
     "(fd, family, address, port, over, first)"},
    {"done", (PyCFunction)Gate_done, METH_O, "done(over): a connection serve() handed over is finished"},
    {"reserve_worker", (PyCFunction)Gate_reserve_worker, METH_NOARGS, "reserve_worker() -> start one more worker?"},
    {"retire_idle", (PyCFunction)Gate_retire_idle, METH_NOARGS, "retire_idle() -> may an idle worker end?"},
    {"worker_gone", (PyCFunction)Gate_worker_gone, METH_O, "worker_gone(waiting) -> workers left"},
    {"add_route", (PyCFunction)Gate_add_route, METH_VARARGS, "add_route(key, name, addrs, ttl) -> kept?"},
    {"counts", (PyCFunction)Gate_counts, METH_NOARGS, "counts() -> {open, idle, workers, served_fast, routes}"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "isolate.netproxy._relay.Gate",
    .tp_basicsize = sizeof(Gate),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Gate(max_open, spare): one sandbox's connection counts, routes and fast path",
    .tp_new = Gate_new,
    .tp_init = (initproc)Gate_init,
    .tp_dealloc = (destructor)Gate_dealloc,
    .tp_methods = Gate_methods,
};

/* The fast path's readings of a client's first bytes, for tests (the same functions). */
static PyObject *relay_first_names(PyObject *self, PyObject *args) {
    Py_buffer d;
    const char *want;
    if (!PyArg_ParseTuple(args, "y*s", &d, &want))
        return NULL;
    int r = first_bytes_name(d.buf, (size_t)d.len, want);
    PyBuffer_Release(&d);
    return PyBool_FromLong(r);
}

static PyObject *relay_proxy_route(PyObject *self, PyObject *args) {
    Py_buffer d;
    if (!PyArg_ParseTuple(args, "y*", &d))
        return NULL;
    char key[ROUTE_KEY], host[ROUTE_NAME];
    const unsigned char *me, *pb, *pe, *vb, *le;
    int port;
    int r = proxy_request(d.buf, (size_t)d.len, key, sizeof key, host, sizeof host, &port, &me, &pb, &pe, &vb, &le);
    PyBuffer_Release(&d);
    if (!r)
        Py_RETURN_NONE;
    return PyUnicode_FromString(key);
}

static PyMethodDef methods[] = {
    {"first_names", relay_first_names, METH_VARARGS,
     "first_names(data, name) -> do a captured connection's first bytes name exactly `name` (Host, SNI)?"},
    {"proxy_route", relay_proxy_route, METH_VARARGS,
     "proxy_route(data) -> the route key of an absolute-form proxy request (E<host>|<port>), or None"},
    {"peek", relay_peek, METH_VARARGS, "peek(fd, timeout_ms, max) -> bytes (b\"\" on timeout) | None (failed)"},
    {"connect_pump", relay_connect_pump, METH_VARARGS,
     "connect_pump(conn, addrs, port, send, wake, bucket, timeout_ms) -> -1 (no address answered) | pump's answer"},
    {"pump", (PyCFunction)(void (*)(void))relay_pump, METH_VARARGS | METH_KEYWORDS,
     "pump(a, b, wake=-1, bucket=None) -> 0 (both ends done), 1 (a socket failed) or 2 (wake readable): "
     "relay the stream sockets a and b both ways, without the GIL"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "isolate.netproxy._relay",
                                    "The network proxy's relay loop and token bucket, in C.", -1, methods};

PyMODINIT_FUNC PyInit__relay(void) {
    if (PyType_Ready(&BucketType) < 0 || PyType_Ready(&GateType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BucketType);
    if (PyModule_AddObject(m, "Bucket", (PyObject *)&BucketType) < 0) {
        Py_DECREF(&BucketType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&GateType);
    if (PyModule_AddObject(m, "Gate", (PyObject *)&GateType) < 0) {
        Py_DECREF(&GateType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
