"""Test-set accuracy of Keras models and of .tflite files (the real LiteRT interpreter)."""

import numpy as np

from spruce._deps import require
from spruce.workflow.progress import bar


def keras_accuracy(model, x, y, batch_size=512, label="eval", progress=True):
    """Top-1 accuracy of a Keras model (BatchNorm in inference mode, as deployed)."""
    import keras

    class _Bar(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            self.bar = bar(int(np.ceil(len(x) / batch_size)), label, progress, "batch")

        def on_test_batch_end(self, batch, logs=None):
            self.bar.update(1)

        def on_test_end(self, logs=None):
            self.bar.close()

    logits = model.predict(x, batch_size=batch_size, verbose=0, callbacks=[_Bar()])
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def tflite_accuracy(path, x, y, label="eval", progress=True, chunk=250):
    """Top-1 accuracy of a .tflite file with the LiteRT interpreter (XNNPACK on).

    The export has a static batch-1 signature. The input is resized to a batch of
    `chunk` when the interpreter accepts it (far fewer Python round trips); when the
    graph cannot take another batch size (a reshape with a baked-in batch of 1), every
    image runs on its own.
    """
    interpreter_mod = require("ai_edge_litert.interpreter")
    batch = _batched_interpreter(interpreter_mod, path, chunk, x)
    if batch is not None:
        interpreter, size = batch
    else:
        interpreter, size = interpreter_mod.Interpreter(model_path=str(path)), 1
        interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    correct = 0
    with bar(len(x), label, progress, "img") as b:
        for start in range(0, len(x), size):
            xs = x[start:start + size].astype(inp["dtype"], copy=False)
            if len(xs) < size:  # last partial batch: pad, then drop the padding
                xs = np.concatenate([xs, np.zeros((size - len(xs),) + xs.shape[1:], xs.dtype)])
            interpreter.set_tensor(inp["index"], xs)
            interpreter.invoke()
            pred = np.argmax(interpreter.get_tensor(out["index"]), axis=-1)[: len(x) - start]
            correct += int(np.sum(pred.reshape(-1) == y[start:start + size]))
            b.update(min(size, len(x) - start))
    return correct / len(x)


def _batched_interpreter(mod, path, chunk, x):
    """An interpreter resized to batch `chunk` whose outputs match batch-1 runs, or None."""
    if chunk <= 1 or len(x) < 2:
        return None
    try:
        interpreter = mod.Interpreter(model_path=str(path))
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], [chunk] + list(inp["shape"][1:]), strict=False)
        interpreter.allocate_tensors()
        out = interpreter.get_output_details()[0]
        probe = x[:2].astype(inp["dtype"])
        xs = np.zeros((chunk,) + probe.shape[1:], probe.dtype)
        xs[:2] = probe
        interpreter.set_tensor(inp["index"], xs)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        if got.shape[0] != chunk:
            return None
        single = mod.Interpreter(model_path=str(path))
        single.allocate_tensors()
        s_in, s_out = single.get_input_details()[0], single.get_output_details()[0]
        for i in range(2):
            single.set_tensor(s_in["index"], probe[i:i + 1])
            single.invoke()
            if not np.allclose(single.get_tensor(s_out["index"]).reshape(-1), got[i].reshape(-1),
                               rtol=1e-4, atol=1e-4):
                return None
        return interpreter, chunk
    except (RuntimeError, ValueError):
        return None

