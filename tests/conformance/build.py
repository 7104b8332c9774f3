"""isolate for another Python of this machine (the pyenv builds): a copy of the package
with its C extension compiled for that interpreter, for the conformance run there.

    build_for("/root/.pyenv/versions/3.12.1/bin/python3.12", DEST) -> DEST (put it first on PYTHONPATH)

isolate-init is static (no interpreter in it) and copied as it is; pyseccomp is one
pure-Python file, copied from this interpreter's site-packages; python-prctl (a C
extension) is installed for that interpreter into DEST by its own pip."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CFLAGS = ["-O2", "-Wall", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-fno-strict-aliasing",
          "-fPIC", "-shared"]


def build_for(python: str, dest: Path) -> Path:
    info = json.loads(subprocess.check_output([python, "-c", "import json, sysconfig; print(json.dumps("
                                               "[sysconfig.get_paths()['include'], "
                                               "sysconfig.get_config_var('EXT_SUFFIX')]))"], text=True))
    include, suffix = info
    pkg = dest / "isolate"
    shutil.copytree(ROOT / "isolate", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"),
                    dirs_exist_ok=True)
    import pyseccomp

    shutil.copy(pyseccomp.__file__, dest / "pyseccomp.py")
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                           str(dest), "python-prctl"], stdout=subprocess.DEVNULL)
    cc = os.environ.get("CC", "cc")
    subprocess.check_call([cc, *CFLAGS, f"-I{include}", "-o", str(pkg / "launch" / f"_launch{suffix}"),
                           str(ROOT / "isolate" / "launch" / "_launch.c")])
    return dest


if __name__ == "__main__":
    print(build_for(sys.argv[1], Path(sys.argv[2])))
