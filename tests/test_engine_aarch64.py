"""The engine on 64-bit ARM: cross-built by the project's CMake build, run under qemu.

scripts/build_aarch64.sh compiles spruce.runtime._engine and _bench with Debian's
aarch64 cross compiler (only the portable kernels exist there). The emulated Debian
Python of `spruce check-arm64` then runs the kernel tests (tests/test_kernels.py,
against NumPy) and the engine against the aarch64 LiteRT on the models of
test_engine.py, converted here by the real TF converter.

Without the cross compiler or qemu these tests skip; CI installs both and sets
SPRUCE_REQUIRE_AARCH64=1, which turns a missing tool into a failure.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_engine import files  # noqa: F401  (the fixture that converts the models)

REPO = Path(__file__).resolve().parent.parent
RTOL = 1e-4

# A cross build and qemu: the full suite only.
pytestmark = pytest.mark.slow


def _missing_tool():
    if not shutil.which("aarch64-linux-gnu-g++"):
        return "the aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)"
    if not any(shutil.which(n) for n in ("qemu-aarch64-static", "qemu-aarch64")):
        return "qemu (apt-get install qemu-user-static)"
    return None


def _test_site(root):
    """pytest and hypothesis (the host's versions) for the emulated Python, cached."""
    import hypothesis

    from spruce.arm64.environment import install_aarch64_wheels

    site = Path(root) / f"test-site-pytest{pytest.__version__}-hypothesis{hypothesis.__version__}"
    if not site.is_dir():
        install_aarch64_wheels(str(site), [f"pytest=={pytest.__version__}",
                                           f"hypothesis=={hypothesis.__version__}"], "pytest and hypothesis")
    return site


@pytest.fixture(scope="module")
def aarch64(tmp_path_factory):
    """(command prefix, environment) that run the aarch64 Python with the aarch64 spruce."""
    missing = _missing_tool()
    if missing:
        if os.environ.get("SPRUCE_REQUIRE_AARCH64") == "1":
            pytest.fail(f"SPRUCE_REQUIRE_AARCH64=1 but {missing} is not installed")
        pytest.skip(f"needs {missing}")
    from spruce.arm64.environment import prepare

    emulation = prepare(progress=False)
    build = subprocess.run(["bash", str(REPO / "scripts" / "build_aarch64.sh"), str(REPO / "build" / "aarch64")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    module = Path(build.stdout.strip().splitlines()[-1])
    assert module.name == "_engine.cpython-311-aarch64-linux-gnu.so", module
    # The spruce package as installed (its Python files), with the aarch64 module.
    import spruce

    package = tmp_path_factory.mktemp("aarch64") / "spruce"
    shutil.copytree(Path(spruce.__file__).parent, package,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "csrc"))
    for built in (module, *module.parent.glob("_bench*.so")):  # the engine and its timing module
        shutil.copy(built, package / "runtime" / built.name)
    paths = [str(package.parent), str(_test_site(Path(emulation.site).parent)), emulation.site]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONDONTWRITEBYTECODE="1")
    env.pop("SPRUCE_KERNELS_ISA", None)
    return emulation.command(), env


def test_kernels_match_numpy_on_aarch64(aarch64):
    command, env = aarch64
    # The one test left out starts a second Python, which qemu's user mode cannot exec.
    run = subprocess.run(
        [*command, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_kernels.py"),
         "--deselect", "tests/test_kernels.py::test_env_var_sends_every_kernel_family_to_the_portable_path"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary, summary


def test_engine_matches_aarch64_litert(aarch64, files):  # noqa: F811
    command, env = aarch64
    names = ["guide", "guide_flat_sparse", "mobilenet_v1", "mobilenet_v2", "activations", "layouts"]
    paths = [str(files(name)) for name in names]
    run = subprocess.run([*command, str(REPO / "tests" / "aarch64_engine_check.py"), *paths],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["machine"] == "aarch64"
    assert len(report["results"]) == 2 * len(names)
    for r in report["results"]:
        assert r["isa"] == "portable"
        assert r["error"] is not None and r["error"] < RTOL, r
    sparse = {Path(r["path"]).stem: r["sparse_layers"] for r in report["results"]}
    assert sparse["mobilenet_v1"] > 0 and sparse["guide_flat_sparse"] > 0
