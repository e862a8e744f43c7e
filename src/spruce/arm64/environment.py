"""The aarch64 LiteRT environment behind `spruce check-arm64`, prepared once and cached.

Three pieces, each under `<cache>/spruce/arm64/` (XDG_CACHE_HOME or ~/.cache):

- the emulator: `qemu-aarch64-static` from Debian's `qemu-user-static` (installed by
  the system's package manager; spruce only checks it is there);
- `sysroot/`: an aarch64 Python 3.11 and its libraries, unpacked from Debian's arm64
  packages. apt runs with a private configuration (`apt/`, removed once unpacked): the machine's own apt
  sources, architecture arm64, its own package lists and an empty dpkg status, so
  it downloads the packages and their dependencies without touching the system
  (no `dpkg --add-architecture`, no root); `dpkg-deb -x` unpacks them;
- `site/`: the aarch64 wheels of numpy and ai-edge-litert 1.4.0 (the last release
  with aarch64 wheels for Python 3.11), fetched by `pip download --platform`.

Only installing `qemu-user-static` needs root (scripts/install.sh does it); the rest
runs as any user. `qemu-aarch64-static -L sysroot sysroot/usr/bin/python3.11` runs the real
aarch64 LiteRT with XNNPACK's ARM kernels. `-L` (not chroot) keeps the host's /sys
visible, from which XNNPACK reads the CPU's features.
"""

import dataclasses
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

from spruce._deps import SpruceEnvironmentError

LITERT_VERSION = "1.4.0"
PYTHON = "python3.11"
# Debian packages for the sysroot; apt adds their dependencies.
DEB_PACKAGES = ("python3.11", "libstdc++6", "libgcc-s1")
WHEEL_PLATFORMS = ("manylinux_2_17_aarch64", "manylinux2014_aarch64")
_STAMP = "ready.json"


class Arm64SetupError(SpruceEnvironmentError, RuntimeError):
    """A piece of the emulation set-up is missing or failed; the message says how to fix it."""


@dataclasses.dataclass
class Arm64Environment:
    qemu: str
    sysroot: str
    site: str
    versions: dict

    @property
    def python(self):
        return os.path.join(self.sysroot, "usr", "bin", PYTHON)

    def command(self, *args):
        """The argv that runs `python3.11 *args` under emulation."""
        return [self.qemu, "-L", self.sysroot, self.python, *args]


def cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "spruce", "arm64")


def available():
    """True when the emulator is installed, so `check_arm64` can run (it may still download)."""
    return any(shutil.which(n) for n in ("qemu-aarch64-static", "qemu-aarch64"))


def find_qemu():
    """Path of the aarch64 user-mode emulator, or a clear error naming the package."""
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        path = shutil.which(name)
        if path:
            return path
    raise Arm64SetupError(
        "spruce check-arm64 runs LiteRT for aarch64 under user-mode emulation and needs "
        "`qemu-aarch64-static`, which was not found on PATH. Install the Debian package "
        "`qemu-user-static`: sudo apt-get install qemu-user-static "
        "(scripts/install.sh installs it).")


def _require_tool(name, package):
    if shutil.which(name) is None:
        raise Arm64SetupError(
            f"preparing the aarch64 sysroot needs `{name}` (Debian package `{package}`), which was "
            f"not found. This set-up uses Debian's package tools; install `{package}`, or run on a "
            "Debian-based machine.")


def _say(progress, message):
    if progress:
        print(f"[spruce check-arm64] {message}", file=sys.stderr, flush=True)


def _run(cmd, what, env=None, cwd=None):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise Arm64SetupError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def host_sources(out_dir, etc="/etc/apt"):
    """Copy the machine's apt sources into `out_dir`, with any architecture restriction removed."""
    files = []
    if os.path.isfile(os.path.join(etc, "sources.list")):
        files.append(os.path.join(etc, "sources.list"))
    files += sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.list")))
    files += sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.sources")))
    written = 0
    for i, src in enumerate(files):
        with open(src) as f:
            text = f.read()
        if src.endswith(".sources"):
            text = re.sub(r"(?im)^architectures:.*\n?", "", text)
        else:
            text = re.sub(r"arch=[^\s\]]+\s*", "", text)
            text = re.sub(r"\[\s*\]\s*", "", text)
        ext = ".sources" if src.endswith(".sources") else ".list"
        with open(os.path.join(out_dir, f"{i:02d}-host{ext}"), "w") as f:
            f.write(text)
        written += 1
    if not written:
        raise Arm64SetupError(
            f"found no apt sources in {etc}/sources.list or {etc}/sources.list.d/; the aarch64 "
            "sysroot is built from the machine's own Debian mirror. Configure apt first.")


def _apt_config(apt_dir):
    for sub in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d", "apt.conf.d"):
        os.makedirs(os.path.join(apt_dir, sub), exist_ok=True)
    open(os.path.join(apt_dir, "status"), "w").close()  # no packages installed: fetch everything
    host_sources(os.path.join(apt_dir, "sources.list.d"))
    conf = os.path.join(apt_dir, "apt.conf")
    settings = {
        "APT::Architecture": "arm64",
        "APT::Architectures": None,
        "Dir::State": apt_dir,
        "Dir::State::Lists": os.path.join(apt_dir, "lists"),
        "Dir::State::status": os.path.join(apt_dir, "status"),
        "Dir::Cache": apt_dir,
        "Dir::Cache::archives": os.path.join(apt_dir, "archives"),
        "Dir::Etc::SourceList": "/dev/null",
        "Dir::Etc::SourceParts": os.path.join(apt_dir, "sources.list.d"),
        "Dir::Etc::Preferences": "/dev/null",
        "Dir::Etc::PreferencesParts": os.path.join(apt_dir, "preferences.d"),
        "Dir::Etc::Parts": os.path.join(apt_dir, "apt.conf.d"),
        "Acquire::Languages": "none",
        "APT::Install-Recommends": "false",
    }
    with open(conf, "w") as f:
        for key, value in settings.items():
            f.write(f'{key} {{ "arm64"; }};\n' if value is None else f'{key} "{value}";\n')
    env = dict(os.environ, APT_CONFIG=conf, DEBIAN_FRONTEND="noninteractive")
    return env


def _unpack_arm64_debs(root, dest, packages, what, progress, dependencies=True):
    """Downloads Debian's arm64 `packages` (with their dependencies when asked) and
    unpacks them into `dest`, which appears whole or not at all."""
    _require_tool("apt-get", "apt")
    _require_tool("dpkg-deb", "dpkg")
    apt_dir = os.path.join(root, "apt")
    shutil.rmtree(apt_dir, ignore_errors=True)
    env = _apt_config(apt_dir)
    _say(progress, f"{what}: reading the arm64 package lists from this machine's apt sources ...")
    _run(["apt-get", "-q", "update"], "apt-get update (arm64 package lists)", env=env)
    archives = os.path.join(apt_dir, "archives")
    listing = ", ".join(packages) + (" and dependencies" if dependencies else "")
    _say(progress, f"{what}: downloading {listing} (arm64) ...")
    if dependencies:
        cmd = ["apt-get", "-q", "-y", "--download-only", "install", *packages]
    else:
        cmd = ["apt-get", "-q", "download", *packages]
    _run(cmd, f"downloading the arm64 packages {' '.join(packages)} (Debian 12 ships python3.11)",
         env=env, cwd=archives)
    debs = sorted(glob.glob(os.path.join(archives, "*.deb")))
    _say(progress, f"{what}: unpacking {len(debs)} packages ...")
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for deb in debs:
        _run(["dpkg-deb", "-x", deb, tmp], f"unpacking {os.path.basename(deb)}")
    shutil.rmtree(apt_dir, ignore_errors=True)  # package lists and .debs (~130 MB) are no longer needed
    return tmp


def _prepare_sysroot(root, progress):
    sysroot = os.path.join(root, "sysroot")
    if os.path.isfile(os.path.join(sysroot, "usr", "bin", PYTHON)):
        return sysroot
    tmp = _unpack_arm64_debs(root, sysroot, DEB_PACKAGES, "aarch64 sysroot", progress)
    if not os.path.isfile(os.path.join(tmp, "usr", "bin", PYTHON)):
        raise Arm64SetupError(
            f"the unpacked arm64 packages contain no /usr/bin/{PYTHON}. The check needs Debian 12's "
            "python3.11 (ai-edge-litert ships aarch64 wheels for Python 3.11 only up to 1.4.0); "
            "point apt at a Debian 12 (bookworm) mirror.")
    shutil.rmtree(sysroot, ignore_errors=True)
    os.replace(tmp, sysroot)
    return sysroot


def python_headers(progress=True, root=None):
    """The include folder of the aarch64 Python 3.11 headers, for cross-building C
    extensions such as spruce's engine (scripts/build_aarch64.sh).

    It holds `python3.11/` and `aarch64-linux-gnu/python3.11/pyconfig.h`, unpacked
    from Debian's arm64 libpython3.11-dev (no dependencies) into the cache once.
    """
    root = root or cache_dir()
    os.makedirs(root, exist_ok=True)
    dest = os.path.join(root, "python-dev")
    include = os.path.join(dest, "usr", "include")
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(os.path.join(include, "python3.11", "Python.h")):
            tmp = _unpack_arm64_debs(root, dest, ("libpython3.11-dev",), "aarch64 Python headers",
                                     progress, dependencies=False)
            if not os.path.isfile(os.path.join(tmp, "usr", "include", "aarch64-linux-gnu", "python3.11",
                                               "pyconfig.h")):
                raise Arm64SetupError(
                    "Debian's arm64 libpython3.11-dev holds no aarch64-linux-gnu/python3.11/pyconfig.h; "
                    "point apt at a Debian 12 (bookworm) mirror.")
            for extra in ("lib", "share"):  # the static libpython (~20 MB) and docs: not needed
                shutil.rmtree(os.path.join(tmp, "usr", extra), ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
    return include


def install_aarch64_wheels(site, requirements, what):
    """Downloads the aarch64 CPython 3.11 wheels of `requirements` (and their dependencies)
    and unpacks them into the folder `site`, which appears whole or not at all.
    `what` names them in the error when pip fails."""
    wheels = site + ".wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "-d", wheels]
    for platform in WHEEL_PLATFORMS:
        cmd += ["--platform", platform]
    _run(cmd + list(requirements), f"pip download of {what} (needs access to PyPI)")
    tmp = site + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
    shutil.rmtree(site, ignore_errors=True)
    os.replace(tmp, site)
    shutil.rmtree(wheels, ignore_errors=True)
    return site


def _prepare_site(root, progress):
    site = os.path.join(root, "site")
    if os.path.isdir(os.path.join(site, "ai_edge_litert")):
        return site
    _say(progress, f"aarch64 LiteRT: downloading the aarch64 wheels of numpy and ai-edge-litert=="
                   f"{LITERT_VERSION} ...")
    return install_aarch64_wheels(site, ["numpy", f"ai-edge-litert=={LITERT_VERSION}"],
                                  "the aarch64 wheels of numpy and ai-edge-litert")


def _smoke_test(env):
    code = ("import sys, json, platform; sys.path.insert(0, sys.argv[1]); import numpy; "
            "from importlib import metadata; from ai_edge_litert.interpreter import Interpreter; "
            "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
            "'numpy': numpy.__version__, 'litert': metadata.version('ai-edge-litert')}))")
    out = _run(env.command("-c", code, env.site), "starting the aarch64 Python under qemu")
    versions = json.loads(out.strip().splitlines()[-1])
    if versions.get("machine") != "aarch64":
        raise Arm64SetupError(f"the emulated Python reports machine {versions.get('machine')!r}, "
                              "expected 'aarch64'.")
    qemu = subprocess.run([env.qemu, "--version"], capture_output=True, text=True).stdout
    versions["qemu"] = qemu.splitlines()[0] if qemu else "unknown"
    return versions


def prepare(progress=True, root=None):
    """Return a ready `Arm64Environment`, downloading and unpacking what is missing.

    The first call takes a minute or two (about 40 MB of downloads); later calls
    read the cache. Progress goes to stderr when `progress` is true.
    """
    qemu = find_qemu()
    root = root or cache_dir()
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes preparing at once wait for each other
        return _prepare_locked(qemu, root, progress)


def _prepare_locked(qemu, root, progress):
    stamp = os.path.join(root, _STAMP)
    if os.path.isfile(stamp):
        with open(stamp) as f:
            info = json.load(f)
        env = Arm64Environment(qemu, info["sysroot"], info["site"], info["versions"])
        if os.path.isfile(env.python) and os.path.isdir(env.site):
            return env
    start = time.monotonic()
    _say(progress, f"preparing the aarch64 emulation environment in {root} (once) ...")
    sysroot = _prepare_sysroot(root, progress)
    site = _prepare_site(root, progress)
    env = Arm64Environment(qemu, sysroot, site, {})
    _say(progress, "checking that the aarch64 Python imports LiteRT under qemu ...")
    env.versions = _smoke_test(env)
    tmp = stamp + ".partial"
    with open(tmp, "w") as f:
        json.dump({"sysroot": sysroot, "site": site, "versions": env.versions}, f, indent=1)
    os.replace(tmp, stamp)
    _say(progress, f"aarch64 environment ready in {time.monotonic() - start:.0f} s: "
                   + ", ".join(f"{k} {v}" for k, v in env.versions.items()))
    return env
