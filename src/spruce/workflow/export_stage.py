"""The export stage of `spruce run`, in a child process: `python -m spruce.workflow.export_stage`.

The TF converter leaves the process it runs in fragile: after it, a later garbage
collection (inside another conversion, or at interpreter exit) has crashed with a
segmentation fault, which turned a finished `spruce run` into exit status 139. The
pipeline therefore converts in a short-lived child that reads the saved `.keras` models
and prints the export reports as JSON; the main process never imports the converter.
"""

import json
import os
import subprocess
import sys


def export_in_child(folder, batch_size):
    """Export folder/dense.keras and folder/pruned.keras; returns {name: ExportReport dict}."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "spruce.workflow.export_stage", folder, str(batch_size)],
                          env=env, stdout=subprocess.PIPE, stderr=None, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"exporting the models of {folder} failed (exit status {done.returncode}); "
                           "the converter's messages are above.")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    folder, batch_size = (argv or sys.argv[1:])[:2]
    import keras

    import spruce

    out = {}
    for name, sparse in (("dense", False), ("pruned", True)):
        print(f"export: {name}.tflite ({'sparse' if sparse else 'dense'} storage) ...",
              file=sys.stderr, flush=True)
        model = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
        report = spruce.export_litert(model, os.path.join(folder, f"{name}.tflite"), sparse=sparse,
                                      batch_size=int(batch_size), verify=True)
        out[name] = report.to_dict()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter teardown the converter can crash; the files are in place


if __name__ == "__main__":
    main()
