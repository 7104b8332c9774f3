"""The mount operations the launch child knows, by number: enum mount_op_kind and BIND_*
in launch/_launch.c say the same (isolate.launch.plans checks it at import). The view
(isolate.plan.fs) is an ordered list of MountOp made of them."""

OP_MOUNT = 1      # mount(a, b, c, flags, d)
OP_MKDIR = 2      # mkdir(b, num); EEXIST is fine
OP_SYMLINK = 3    # symlink(a, b)
OP_WRITE = 4      # create b with mode num, write d
OP_BIND = 5       # bind a onto b (created to match a's type); flags: BIND_*
OP_PIVOT = 6      # pivot_root into b
OP_REMOUNT = 7    # mount(NULL, b, NULL, MS_REMOUNT|MS_BIND|flags, NULL)
OP_CHMOD = 8      # chmod(b, num)
OP_UMOUNT = 9     # umount2(b, MNT_DETACH)
OP_NAMES = {v: k for k, v in list(globals().items()) if k.startswith("OP_") and isinstance(v, int)}
BIND_READONLY = 1
BIND_OPTIONAL = 2
BIND_DEV = 4
BIND_NOEXEC = 8   # noexec too (the empty directories that hide a path)
BIND_ASIS = 16    # no mount_setattr: the bind keeps its source mount's flags, which are the ones asked for
MP_THERE = 3      # OP_BIND's num: the mount point exists (a view template made it)
