#!/usr/bin/env bash
# Installs spruce and everything it uses on a fresh Debian machine (run as root, or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# System packages: the default data set, the emulator behind `spruce check-arm64`, and the
# aarch64 cross compiler with which the tests build and run the engine for ARM.
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    dataset-fashion-mnist qemu-user-static g++-aarch64-linux-gnu >/dev/null
python3 -m pip install -q --upgrade pip
python3 -m pip install -q ".[all,test,fuzz]"
echo "spruce installed: $(command -v spruce)"
