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


def _musl(build_temp: str):
    """[musl-gcc, flags...] for a static program that needs only libc and the kernel's headers,
    or None (musl-gcc not installed, or ISOLATE_MUSL=0).

    glibc's static start-up runs about 50 cpuid instructions (init_cpu_features and the cache
    sizes of dl_init_cacheinfo), and on a virtual machine each one is an exit to the
    hypervisor: 0.25 ms of every start of isolate-init and of the native `isolate` command
    on the machine this was measured on. musl's start-up runs none. musl-gcc searches only
    musl's headers, so the kernel's (linux/, asm/, asm-generic/) are linked in from the
    system's include directory."""
    if os.environ.get("ISOLATE_MUSL") == "0":
        return None
    cc = shutil.which("musl-gcc")
    if not cc:
        return None
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    candidates = ([f"/usr/include/{multiarch}/asm"] if multiarch else []) + ["/usr/include/asm"]
    asm = next((d for d in candidates if os.path.isdir(d)), None)
    if not (os.path.isdir("/usr/include/linux") and os.path.isdir("/usr/include/asm-generic") and asm):
        return None
    inc = os.path.join(os.path.abspath(build_temp), "musl-include")
    os.makedirs(inc, exist_ok=True)
    for name, target in (("linux", "/usr/include/linux"), ("asm-generic", "/usr/include/asm-generic"), ("asm", asm)):
        link = os.path.join(inc, name)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
    return [cc, "-isystem", inc, "-DISOLATE_MUSL=1"]


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
        musl = _musl(self.build_temp)
        self._static(musl, [cc], ["-o", out, src])
        os.chmod(out, 0o755)
        # isolate-agentd: the program of an isolate.Session's sandbox (static, like isolate-init).
        agent_out = os.path.join(os.path.dirname(out_dir), "agent", "isolate-agentd")
        os.makedirs(os.path.dirname(agent_out), exist_ok=True)
        self._static(musl, [cc], ["-o", agent_out, os.path.join(here, "isolate", "agent", "_agentd.c")])
        os.chmod(agent_out, 0o755)
        # The native `isolate` command: `isolate run` of a cached plan without Python
        # (scripts/install.sh puts it at .venv/bin/isolate; anything else it hands to isolate-py).
        native_out = os.path.join(out_dir, "isolate-native")
        self._static(musl, [cc], [f'-DISOLATE_BUILD_ID="{BUILD_ID}"', "-o", native_out,
                                  os.path.join(here, "isolate", "launch", "_cli.c")])
        os.chmod(native_out, 0o755)
        # isolate-replay.so: preloaded into libFuzzer targets by isolate.fuzz.triage, it replays an
        # input without libFuzzer's driver (isolate/fuzz/_replay.c). Dynamic, against the system libc.
        replay_out = os.path.join(os.path.dirname(out_dir), "fuzz", "isolate-replay.so")
        os.makedirs(os.path.dirname(replay_out), exist_ok=True)
        # One code segment fewer (-z noseparate-code): the replay's /proc/self/maps, which ASan
        # reads a dozen times per start, stays shorter.
        cmd = [cc, *CFLAGS, "-g", "-shared", "-fPIC", "-Wl,-z,noseparate-code", "-o", replay_out,
               os.path.join(here, "isolate", "fuzz", "_replay.c"), "-ldl"]
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)
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

    def _static(self, musl, cc, args):
        """A static program, with musl where it builds (see _musl), else with the C compiler."""
        if musl:
            cmd = [*musl, *CFLAGS, "-static", *args]
            self.announce(" ".join(cmd), level=2)
            if subprocess.call(cmd) == 0:
                return
            self.warn("musl-gcc failed: building with glibc (its start-up is slower on a VM)")
        cmd = [*cc, *CFLAGS, "-static", *args]
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)


setup(
    ext_modules=[
        Extension(
            "isolate.launch._launch",
            sources=["isolate/launch/_launch.c"],
            # Every source of the build id: the extension is rebuilt (with the new id) when any changes.
            depends=[src for src in LAUNCH_SOURCES if src != "isolate/launch/_launch.c"],
            define_macros=[("ISOLATE_BUILD_ID", f'"{BUILD_ID}"')],
            extra_compile_args=CFLAGS,
        ),
        # The network proxy's relay loop and token bucket (isolate/netproxy/proxy.py).
        Extension("isolate.netproxy._relay", sources=["isolate/netproxy/_relay.c"], extra_compile_args=CFLAGS),
    ],
    cmdclass={"build_ext": BuildWithInit},
)
