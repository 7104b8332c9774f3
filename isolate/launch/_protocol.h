/* What the launch child and the sandbox init tell the parent, over one pipe.
 *
 * Every message is one fixed-size record, written with a single write(2) so it is
 * atomic on a pipe. The step numbers are mirrored in isolate/launch/process.py (STEP_NUMBERS).
 */
#ifndef ISOLATE_PROTOCOL_H
#define ISOLATE_PROTOCOL_H

#include <stdint.h>

enum isolate_step {
    STEP_NONE = 0,
    STEP_CLONE = 1,
    STEP_ID_MAPS = 2,     /* waiting for the parent to write uid_map/gid_map */
    STEP_SETSID = 3,
    STEP_HOSTNAME = 4,
    STEP_MOUNT = 5,       /* index = the mount operation */
    STEP_LOOPBACK = 6,
    STEP_FDS = 7,         /* index = the target fd */
    STEP_RLIMIT = 8,      /* index = the resource */
    STEP_CHDIR = 9,
    STEP_CAPS_BOUND = 10,
    STEP_SETGROUPS = 11,
    STEP_SETGID = 12,
    STEP_SETUID = 13,
    STEP_NO_NEW_PRIVS = 14,
    STEP_CAPS = 15,
    STEP_SECCOMP = 16,
    STEP_EXEC = 17,       /* the program itself */
    STEP_EXEC_INIT = 18,  /* the sandbox's pid 1 */
    STEP_INIT = 19,       /* inside pid 1 before the program starts (index = sub-step) */
    STEP_SIGNALS = 20,
    STEP_NETNS = 21,      /* joining a prepared network namespace */
    STEP_LANDLOCK = 22,
    STEP_CGROUP = 23,
    STEP_PDEATHSIG = 24,
    STEP__COUNT
};

enum isolate_msg_kind {
    MSG_ERROR = 1,    /* a = step, b = index, c = errno */
    MSG_STARTED = 2,  /* init: the program has exec'd; a = its pid inside */
    MSG_EXITED = 3,   /* init: the program ended; a = its wait status */
    MSG_TIMING = 4,   /* init: a = phase, t = CLOCK_MONOTONIC ns */
};

struct isolate_msg {
    int32_t kind;
    int32_t a;
    int32_t b;
    int32_t c;
    int64_t t;
};

#endif
