/* isolate.netproxy._relay: the proxy's data path in C, without the interpreter lock.

   Once the proxy (isolate/netproxy/proxy.py) has decided a connection and connected
   upstream, pump() relays the two sockets both ways in a poll loop of its own with the
   GIL released: no Python code runs per read, and no other Python thread of the caller
   waits for this one. Bucket is a sandbox's bytes-per-second token bucket, shared by its
   connections (a mutex, no GIL), taken before every write.

   pump(a, b, wake, bucket=None): a and b are connected stream sockets (fds), wake an fd
   that becomes readable when the proxy closes (pump returns at once then). Each direction
   is relayed until its reader sees end of file, which is passed on as shutdown(SHUT_WR)
   to the other socket; pump returns when both directions are done, on the first error of
   either socket, or when `wake` is readable. Writes never block: a full socket waits in
   poll() with `wake`, so a peer that stops reading cannot keep pump from returning.
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif

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
   negative and the next writers wait longer). The caller does not hold the GIL. */
static void bucket_take(Bucket *b, size_t n) {
    if (b == NULL || b->rate <= 0)
        return;
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
            return;
        }
        wait = (want - b->tokens) / b->rate;
        pthread_mutex_unlock(&b->lock);
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
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
    bucket_take(self, (size_t)n);
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
            ssize_t got = recv(src, buf, BUF_SIZE, MSG_DONTWAIT);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    continue;
                return 1;
            }
            if (got == 0) {
                shutdown(dst, SHUT_WR);
                open_[i] = 0;
                continue;
            }
            bucket_take(bucket, (size_t)got);
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

/* The address a captured connection was sent to (SO_ORIGINAL_DST, IPv4 or IPv6), or,
   when it was not redirected, the address it reached. 0 = ok. */
static int original_dst(int fd, int family, char *ip, size_t iplen, int *port) {
    if (family == AF_INET) {
        struct sockaddr_in a;
        socklen_t l = sizeof a;
        if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &a, &l) < 0) {
            l = sizeof a;
            if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
                return -1;
        }
        *port = ntohs(a.sin_port);
        return inet_ntop(AF_INET, &a.sin_addr, ip, (socklen_t)iplen) ? 0 : -1;
    }
    struct sockaddr_in6 a;
    socklen_t l = sizeof a;
    if (getsockopt(fd, SOL_IPV6, SO_ORIGINAL_DST, &a, &l) < 0) {
        l = sizeof a;
        if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
            return -1;
    }
    *port = ntohs(a.sin6_port);
    return inet_ntop(AF_INET6, &a.sin6_addr, ip, (socklen_t)iplen) ? 0 : -1;
}

/* accept(epfd, wake, timeout_ms): wait (without the GIL) in the epoll `epfd` whose fds are
   non-blocking listening sockets and `wake`, and accept one connection. None after
   timeout_ms (-1: no timeout) with nothing accepted, -1 when `wake` is readable, else
   (fd, family, original destination address, port): the new socket is blocking, close-on-exec
   and has TCP_NODELAY. */
static PyObject *relay_accept(PyObject *self, PyObject *args) {
    int epfd, wake, timeout_ms;
    if (!PyArg_ParseTuple(args, "iii", &epfd, &wake, &timeout_ms))
        return NULL;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int fd = -1, family = 0, port = 0, woken = 0, err = 0;
    char ip[INET6_ADDRSTRLEN] = "";
    Py_BEGIN_ALLOW_THREADS
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
            err = errno;
            break;
        }
        if (n == 0)
            break;
        for (int i = 0; i < n && fd < 0 && !woken; i++) {
            if (ev[i].data.fd == wake) {
                woken = 1;
                break;
            }
            struct sockaddr_storage peer;
            socklen_t pl = sizeof peer;
            int c = accept4(ev[i].data.fd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
            if (c < 0)
                continue;   /* another worker took it (EAGAIN), or the client is gone already */
            family = peer.ss_family;
            int one = 1;
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (original_dst(c, family, ip, sizeof ip, &port) < 0) {
                close(c);
                continue;
            }
            fd = c;
        }
        if (fd >= 0 || woken)
            break;
        if (timeout_ms >= 0 && ms_since(&t0) >= timeout_ms)
            break;
    }
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (woken)
        return PyLong_FromLong(-1);
    if (fd < 0)
        Py_RETURN_NONE;
    PyObject *r = Py_BuildValue("(iisi)", fd, family, ip, port);
    if (r == NULL)
        close(fd);
    return r;
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

/* A connected socket to ip:port, or -1; waits at most timeout_ms, and not after `wake`. */
static int connect_one(const char *ip, int port, int timeout_ms, int wake) {
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
    if (connect(s, (struct sockaddr *)&ss, sl) < 0) {
        if (errno != EINPROGRESS) {
            close(s);
            return -1;
        }
        struct pollfd p[2] = {{s, POLLOUT, 0}, {wake, POLLIN, 0}};
        int n;
        do
            n = poll(p, wake >= 0 ? 2 : 1, timeout_ms);
        while (n < 0 && errno == EINTR);
        int e = 0;
        socklen_t el = sizeof e;
        if (n <= 0 || (wake >= 0 && p[1].revents) ||
            getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
            close(s);
            return -1;
        }
    }
    return s;
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
    int rc = -1;
    Bucket *b = bucket == Py_None ? NULL : (Bucket *)bucket;
    Py_INCREF(bucket);
    Py_BEGIN_ALLOW_THREADS
    int up = -1;
    for (Py_ssize_t i = 0; i < n && up < 0; i++)
        up = connect_one(ips[i], port, timeout_ms, wake);
    if (up >= 0) {
        int one = 1;
        setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        rc = 1;
        if (send.len > 0) {
            bucket_take(b, (size_t)send.len);
            if (write_all(up, send.buf, (size_t)send.len, wake) == 0)
                rc = relay(conn, up, wake, b, buf);
        } else {
            rc = relay(conn, up, wake, b, buf);
        }
        close(up);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(bucket);
    for (Py_ssize_t i = 0; i < n; i++)
        free(ips[i]);
    free(ips);
    free(buf);
    PyBuffer_Release(&send);
    return PyLong_FromLong(rc);
}

static PyMethodDef methods[] = {
    {"accept", relay_accept, METH_VARARGS,
     "accept(epfd, wake, timeout_ms) -> None | -1 | (fd, family, original address, port)"},
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
    if (PyType_Ready(&BucketType) < 0)
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
    return m;
}
