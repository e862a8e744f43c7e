"""The int8 stage of `spruce run --quantize int8`: both models as full-integer int8 files.

Post-training quantization: `spruce.export_litert(quantize="int8")` converts dense.keras and
pruned.keras, calibrated on `CALIBRATION_SAMPLES` training images (the pruned model's 1x1
filters stored sparse, int8), in a short-lived child process as the float export is (see
`export_stage`). The files are then evaluated on LiteRT like the float ones and timed on
LiteRT and, when it loads them, on spruce's engine.
"""

import json
import os
import subprocess
import sys

import numpy as np

# Training images the int8 ranges are calibrated on. On the guide's net 100 to 2000 images
# give the same accuracy to a tenth of a point; 500 covers every class many times and takes
# a few seconds to run through the converter.
CALIBRATION_SAMPLES = 500

FILES = {
    "dense_int8.tflite": "dense model, full-integer int8 (float32 input and output)",
    "pruned_int8.tflite": "pruned model, full-integer int8, 1x1 filters stored sparse (int8 behind DENSIFY)",
}


def calibration_images(x_train, count=CALIBRATION_SAMPLES, seed=0):
    """`count` training images picked with `seed`: the data int8 calibration sees."""
    if len(x_train) <= count:
        return x_train
    pick = np.sort(np.random.default_rng(seed).choice(len(x_train), count, replace=False))
    return x_train[pick]


def default_calibration(input_shape):
    """The images `spruce export --int8` calibrates on when no file is given: training images
    of `spruce run`'s default data set, Fashion-MNIST as the run feeds them (32x32x3 in [0, 1])."""
    from spruce.workflow.data import load_dataset

    if tuple(input_shape) != (32, 32, 3):
        raise ValueError(
            "without --representative, --int8 calibrates on Fashion-MNIST training images as `spruce "
            "run` feeds them, shaped (32, 32, 3), but the model takes inputs shaped "
            f"{tuple(input_shape)}. Received: no --representative. Pass --representative FILE.npy: "
            "a few hundred of its typical inputs, preprocessed as for the model, shaped (N, "
            f"{', '.join(map(str, input_shape))}).")
    images = calibration_images(load_dataset("fashion_mnist").x_train)
    return images, f"{len(images)} Fashion-MNIST training images"


def export_int8_in_child(folder, batch_size, calibration_path):
    """Export folder/dense.keras and folder/pruned.keras as int8, calibrated on the .npy at
    `calibration_path`; returns {name: ExportReport dict}."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "spruce.workflow.quantize", folder, str(batch_size),
                           calibration_path], env=env, stdout=subprocess.PIPE, stderr=None, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"exporting the int8 models of {folder} failed (exit status {done.returncode}); "
                           "the converter's messages are above.")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    folder, batch_size, calibration_path = (argv or sys.argv[1:])[:3]
    import keras

    import spruce

    images = np.load(calibration_path, allow_pickle=False)
    out = {}
    for name, sparse in (("dense", False), ("pruned", True)):
        print(f"quantize: {name}_int8.tflite (int8, {'sparse' if sparse else 'dense'} storage) ...",
              file=sys.stderr, flush=True)
        model = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
        report = spruce.export_litert(model, os.path.join(folder, f"{name}_int8.tflite"), sparse=sparse,
                                      batch_size=int(batch_size), quantize="int8",
                                      representative_dataset=images)
        out[name] = report.to_dict()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter teardown the converter can crash; the files are in place


if __name__ == "__main__":
    main()
