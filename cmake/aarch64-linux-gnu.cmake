# Cross-compiling for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu
# (scripts/build_aarch64.sh). Only the portable kernels are built for it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# Look for programs on the build machine, for libraries and headers only among the target's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
