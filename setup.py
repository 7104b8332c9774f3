"""Build: the C extension isolate.launch._launch and the static helpers isolate/launch/isolate-init
and isolate/agent/isolate-agentd.

isolate-init is the sandbox's pid 1. It is linked statically so that it runs in any
filesystem view, even one without a dynamic loader or libc in it.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CFLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
          "-fno-strict-aliasing"]

# The launch path's sources: the extension and the native `isolate` command are built from
# them with the same id, and a cached plan (isolate/launch/plancache.py) records it.
LAUNCH_SOURCES = ["isolate/launch/_launch.c", "isolate/launch/_cli.c", "isolate/launch/_init.c",
                  "isolate/launch/_protocol.h", "isolate/launch/_syscall.h", "isolate/launch/_plancache.h"]


def _build_id() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in LAUNCH_SOURCES:
        with open(os.path.join(here, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:32]


BUILD_ID = _build_id()


def _static_cc(cc: str, tmp: str) -> list:
    """The compiler (and its flags) for the static helpers isolate-init and isolate-agentd:
    musl-gcc where it works, else `cc`. Every cold launch execs isolate-init (a Session,
    isolate-agentd too): glibc's static start-up probes the CPU with cpuid dozens of times
    (a trap to the hypervisor each, in a VM) and relocates its ifuncs, ~0.3 ms here; musl's
    start-up is a few instructions and the binary is 50 KB instead of 770. musl-gcc does
    not search /usr/include: the kernel's uapi headers (linux/, asm/, asm-generic/) are
    linked into a directory of their own. ISOLATE_NO_MUSL=1 keeps glibc."""
    musl = shutil.which("musl-gcc")
    if os.environ.get("ISOLATE_NO_MUSL") or not musl:
        return [cc]
    shim = os.path.join(tmp, "uapi")
    os.makedirs(shim, exist_ok=True)
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for name in ("linux", "asm", "asm-generic"):
        for d in (os.path.join("/usr/include", multiarch, name), os.path.join("/usr/include", name)):
            if os.path.isdir(d):
                link = os.path.join(shim, name)
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(d, link)
                break
    probe = os.path.join(tmp, "musl-probe.c")
    with open(probe, "w") as f:
        f.write("#include <linux/seccomp.h>\n#include <linux/filter.h>\n#include <sys/signalfd.h>\n"
                "int main(void) { return SECCOMP_SET_MODE_FILTER == 1 ? 0 : 1; }\n")
    cmd = [musl, "-static", "-isystem", shim, "-o", probe[:-2], probe]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
        subprocess.run([probe[:-2]], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return [cc]
    return [musl, "-isystem", shim]


class BuildWithInit(build_ext):
    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        src = os.path.join(here, "isolate", "launch", "_init.c")
        if self.inplace:
            out_dir = os.path.join(here, "isolate", "launch")
        else:
            out_dir = os.path.join(os.path.abspath(self.build_lib), "isolate", "launch")
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "isolate-init")
        cc = os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"
        os.makedirs(self.build_temp, exist_ok=True)
        helper_cc = _static_cc(cc, os.path.abspath(self.build_temp))
        cmd = [*helper_cc, *CFLAGS, "-static", "-o", out, src]
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)
        os.chmod(out, 0o755)
        # isolate-agentd: the program of an isolate.Session's sandbox (static, like isolate-init).
        agent_out = os.path.join(os.path.dirname(out_dir), "agent", "isolate-agentd")
        os.makedirs(os.path.dirname(agent_out), exist_ok=True)
        cmd = [*helper_cc, *CFLAGS, "-static", "-o", agent_out, os.path.join(here, "isolate", "agent", "_agentd.c")]
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)
        os.chmod(agent_out, 0o755)
        # The native `isolate` command: `isolate run` of a cached plan without Python
        # (scripts/install.sh puts it at .venv/bin/isolate; anything else it hands to isolate-py).
        native_out = os.path.join(out_dir, "isolate-native")
        cmd = [cc, *CFLAGS, "-static", f'-DISOLATE_BUILD_ID="{BUILD_ID}"', "-o", native_out,
               os.path.join(here, "isolate", "launch", "_cli.c")]
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)
        os.chmod(native_out, 0o755)
        # A venv whose `isolate` is already the native command (scripts/install.sh) gets the
        # new build too: an old copy has another build id and would never find its plans.
        installed = os.path.join(sys.prefix, "bin", "isolate")
        try:
            with open(installed, "rb") as f:
                native_installed = f.read(4) == b"\x7fELF"
        except OSError:
            native_installed = False
        if native_installed:
            tmp = installed + ".new"
            shutil.copyfile(native_out, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, installed)


setup(
    ext_modules=[
        Extension(
            "isolate.launch._launch",
            sources=["isolate/launch/_launch.c"],
            # Every source of the build id: the extension is rebuilt (with the new id) when any changes.
            depends=[src for src in LAUNCH_SOURCES if src != "isolate/launch/_launch.c"],
            define_macros=[("ISOLATE_BUILD_ID", f'"{BUILD_ID}"')],
            extra_compile_args=CFLAGS,
        )
    ],
    cmdclass={"build_ext": BuildWithInit},
)
