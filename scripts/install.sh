#!/usr/bin/env bash
# Installs everything isolate needs on a fresh Debian/Ubuntu machine, then the
# package itself (editable) into .venv. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# musl-tools, linux-libc-dev: setup.py links isolate-init and the native command with musl
# (glibc's static start-up costs 0.25 ms of cpuid on a VM; see setup.py _musl)
APT_PACKAGES=(gcc libc6-dev musl-tools linux-libc-dev libcap-dev libseccomp-dev libseccomp2 iproute2 util-linux bubblewrap hyperfine nftables openssl curl)
# benchmarks: the command-line peers (bwrap and hyperfine are above)
APT_PACKAGES+=(firejail)
# isolate fuzz: libFuzzer (clang -fsanitize=fuzzer, symbolizer) and AFL++. Debian 12 has no
# honggfuzz package: build it from source if wanted (isolate doctor says which engines it finds).
APT_PACKAGES+=(clang-14 libclang-rt-14-dev llvm-14 afl++)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel >.venv/install.log 2>&1 \
    || { cat .venv/install.log; exit 1; }
.venv/bin/python -m pip install -q -e '.[test,fuzz,bench]' >>.venv/install.log 2>&1 \
    || { cat .venv/install.log; exit 1; }
# The native `isolate` command (built by setup.py with the extension): `isolate run` of a cached
# plan without Python; everything else it hands to .venv/bin/isolate-py (docs/cli-fast-path.md).
if [ ! -x isolate/launch/isolate-native ]; then
    .venv/bin/python setup.py -q build_ext --inplace >>.venv/install.log 2>&1 || { cat .venv/install.log; exit 1; }
fi
install -m 0755 isolate/launch/isolate-native .venv/bin/isolate.native.tmp
mv -f .venv/bin/isolate.native.tmp .venv/bin/isolate
