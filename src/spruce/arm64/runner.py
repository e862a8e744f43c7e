"""Times two .tflite files A/B, interleaved, with LiteRT; runs inside the aarch64 emulator.

A standalone script (it imports neither spruce nor anything beyond the aarch64
numpy and ai-edge-litert wheels), invoked as

    qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11 runner.py SPEC.json

SPEC holds {"site": wheels folder, "models": {name: path}, "threads": 1,
"repetitions": R, "target_seconds": T, "seed": S, "outputs": optional .npz path}. It
prints one JSON document: per model, the per-invoke CPU seconds of each repetition;
whether the first two models' outputs are bitwise identical, and their largest absolute
difference; whether the emulated CPU has ARMv8.2 FP16 arithmetic. With "outputs", each
model's outputs are saved there as `<name>:<index>`, for comparisons across runs.
"""

import ctypes
import json
import platform
import sys
import time

_AT_HWCAP = 16
_HWCAP_FPHP, _HWCAP_ASIMDHP = 1 << 9, 1 << 10  # scalar and vector half-precision arithmetic


def _load(Interpreter, path, threads, inputs_from, np, rng):
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    inputs = []
    for i, d in enumerate(it.get_input_details()):
        if inputs_from is not None:
            x = inputs_from[i]
        elif d["dtype"] in (np.float32, np.float16):
            x = rng.standard_normal(d["shape"]).astype(d["dtype"])
        else:
            info = np.iinfo(d["dtype"])
            x = rng.integers(max(info.min, -100), min(info.max, 100), d["shape"]).astype(d["dtype"])
        it.set_tensor(d["index"], x)
        inputs.append(x)
    return it, inputs


def _outputs(it):
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def _per_invoke(it, n):
    # CPU time of this (single-threaded) process: other processes on a busy host
    # slow the wall clock, not this.
    start = time.process_time()
    for _ in range(n):
        it.invoke()
    return (time.process_time() - start) / n


def _cpu_fp16_arithmetic():
    """The FP16 arithmetic XNNPACK's fp16 kernels need, as the kernel reports it to programs."""
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    hwcap = libc.getauxval(_AT_HWCAP)
    return bool(hwcap & _HWCAP_FPHP) and bool(hwcap & _HWCAP_ASIMDHP)


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    sys.path.insert(0, spec["site"])
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(spec.get("seed", 0))
    names = list(spec["models"])
    interpreters, inputs = {}, None
    for name in names:
        interpreters[name], inputs = _load(Interpreter, spec["models"][name], spec["threads"],
                                           inputs, np, rng)

    # First invoke plans XNNPACK (and packs weights); it is warm-up, and gives the outputs.
    outputs, first = {}, {}
    for name in names:
        first[name] = _per_invoke(interpreters[name], 1)
        outputs[name] = _outputs(interpreters[name])
    # Calibrate so that one measurement of the slowest model lasts about target_seconds.
    one = max(_per_invoke(interpreters[n], 1) for n in names)
    inner = max(1, int(spec.get("target_seconds", 0.5) / max(one, 1e-9)))

    times = {name: [] for name in names}
    for rep in range(spec["repetitions"]):
        order = names if rep % 2 == 0 else names[::-1]  # ABBA: drift hits both alike
        for name in order:
            times[name].append(_per_invoke(interpreters[name], inner))

    if spec.get("outputs"):
        np.savez(spec["outputs"], **{f"{n}:{i}": x for n in names for i, x in enumerate(outputs[n])})
    a, b = (outputs[n] for n in (names * 2)[:2])
    diff = max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))
    scale = max(float(np.max(np.abs(x.astype(np.float64)))) for x in a)
    identical = all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))
    import ai_edge_litert
    version = getattr(ai_edge_litert, "__version__", None)
    if version is None:
        from importlib import metadata
        version = metadata.version("ai-edge-litert")
    print(json.dumps({
        "machine": platform.machine(),
        "python": platform.python_version(),
        "litert": version,
        "numpy": np.__version__,
        "threads": spec["threads"],
        "invokes_per_repetition": inner,
        "first_invoke_seconds": first,
        "seconds": times,
        "max_abs_diff": diff,
        "bitwise_identical": identical,
        "max_abs_output": scale,
        "cpu_fp16_arithmetic": _cpu_fp16_arithmetic(),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
