#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine with Python 3.11: system packages, a virtual
# environment in .venv, PyTorch (CPU, pinned), pcomm built from this checkout, test tools.
# Safe to run again: it installs only what is missing and rebuilds pcomm.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# System packages: a C++ compiler for the core, OpenSSL and clang (below) (and for py-libp2p's C dependencies); iproute2 and iptables for the tests that
# build network namespaces; python3-venv where the interpreter is Debian's own.
need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
"$PYTHON" -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# OpenSSL headers: TLS on every connection of the core. clang: the libFuzzer targets (fuzz/).
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v clang++ >/dev/null 2>&1 || need+=(clang)
# GMP headers: py-libp2p's fastecdsa dependency compiles from source against them.
compgen -G "/usr/include/gmp.h" >/dev/null || compgen -G "/usr/include/*/gmp.h" >/dev/null || need+=(libgmp-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned: a looser requirement can pull a multi-gigabyte CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
# Build tools live in the venv so rebuilds can skip isolation and reuse build/ (fast).
.venv/bin/python -m pip install -q scikit-build-core pybind11 cmake ninja
.venv/bin/python -m pip install -q --no-build-isolation -e ".[test,examples,discovery]"
