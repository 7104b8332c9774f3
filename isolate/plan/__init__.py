"""The plan: a profile compiled into a Plan, one module per concern (see docs/architecture.md).

plan.py the Plan; compile.py the compiler; fs.py the filesystem view; mountops.py its steps'
numbers; landlock.py Landlock rules; ids.py the host-id range; seccomp/ the filter.
Nothing here imports isolate.launch or the C extension.
"""
