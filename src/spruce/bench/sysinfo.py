"""What a benchmark ran on: CPU model, ISA, threads, package versions."""

import os
import platform
from importlib import metadata

AVX_NOTE = (
    "This CPU has AVX: XNNPACK does not use its sparse path on such CPUs, so a pruned model is "
    "not expected to be faster than the dense one here with LiteRT. Use `spruce check-arm64` (ARM "
    "under emulation), `spruce bench --adb` (a phone) or `--engine spruce` (spruce's x86 engine).")


def _cpuinfo(path="/proc/cpuinfo"):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model(fields=None):
    fields = _cpuinfo() if fields is None else fields
    for key in ("model name", "hardware", "cpu model", "processor"):
        if fields.get(key) and not fields[key].isdigit():
            return fields[key]
    if fields.get("cpu part"):
        return f"ARM CPU implementer {fields.get('cpu implementer', '?')} part {fields['cpu part']}"
    return platform.processor() or platform.machine()


def has_avx(fields=None):
    """True when /proc/cpuinfo lists the `avx` flag (x86 only; False elsewhere)."""
    fields = _cpuinfo() if fields is None else fields
    return "avx" in fields.get("flags", "").split()


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def system_info(threads):
    """A dict describing the machine and software a measurement was taken with."""
    from spruce import __version__

    fields = _cpuinfo()
    avx = has_avx(fields)
    info = {
        "cpu": cpu_model(fields),
        "machine": platform.machine(),
        "avx": avx,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": {"ai-edge-litert": _version("ai-edge-litert"), "numpy": _version("numpy"),
                     "spruce": __version__},
    }
    if avx:
        info["note"] = AVX_NOTE
    return info
