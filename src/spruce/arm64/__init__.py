"""Check on x86 whether XNNPACK's sparse path engages on ARM, under aarch64 emulation.

`check_arm64(path)` runs the real LiteRT for aarch64 (qemu user-mode emulation, a
Debian arm64 sysroot, the aarch64 wheels; prepared once and cached) on the file as
exported and on the same weights stored dense, and reports whether the sparse path ran.
"""

from spruce.arm64.check import Arm64Report, EmulationError, Fp16Report, check_arm64
from spruce.arm64.environment import Arm64SetupError, available, prepare

__all__ = ["Arm64Report", "Arm64SetupError", "EmulationError", "Fp16Report", "available", "check_arm64",
           "prepare"]
