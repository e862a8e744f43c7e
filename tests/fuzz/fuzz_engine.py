"""Coverage-guided fuzz target (atheris) over the .tflite reader, the loader and
the native engine: see `target.py` for what counts as a finding, and
`scripts/fuzz.sh` for how to run it (against the ASan build).

    python tests/fuzz/fuzz_engine.py WORK_CORPUS tests/fuzz/corpus [libFuzzer flags]

Half of the mutations are libFuzzer's byte-level ones, half change one field of
the decoded model (`mutator.py`). Coverage guides them through spruce's Python
(the reader, the FlatBuffers checks, the sparse decoder, the loader) and the
generated schema code that parses builtin options; the native code is built
with g++, which has no libFuzzer coverage, so it is reached through what the
Python lets by and checked by the sanitizers.
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["spruce", "ai_edge_litert.schema_py_generated", "target"]):
    import target

import mutator  # noqa: E402  (not instrumented: it is no code under test)


def test_one_input(data):
    target.check_one(bytes(data))


def custom_mutator(data, max_size, seed):
    if seed % 2:
        out = mutator.mutate_model(data, seed)
        if out is not None and len(out) <= max_size:
            return out
    return atheris.Mutate(data, max_size)


def main():
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
