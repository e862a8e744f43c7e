"""Keras callbacks for pruning: `UpdatePruningStep` and `PruningSummaries`.

The step and mask updates themselves run inside the wrappers' train-time call
(see `spruce.wrapper`); `UpdatePruningStep` starts the step count of a fresh
model, arms the wrappers, and writes the masks into the weight variables at each
epoch end. `PruningSummaries` writes per-layer sparsity and threshold scalars as
TensorBoard event files, with a small built-in writer, so it needs neither
TensorFlow nor the tensorboard package and works under every Keras backend.
"""

import os
import socket
import struct
import time

import keras
import numpy as np
from keras import ops

from spruce.wrapper import collect_prunable_layers


class UpdatePruningStep(keras.callbacks.Callback):
    """Required when training a pruned model: `model.fit(..., callbacks=[UpdatePruningStep()])`.

    A fresh model's `pruning_step` goes from -1 to 0 at the start of training (a
    reloaded model keeps its count, so training resumes where it stopped); the
    first training batch then runs at step 1, as in tfmot.
    """

    def __init__(self):
        super().__init__()
        self.prunable_layers = []

    def on_train_begin(self, logs=None):
        self.prunable_layers = collect_prunable_layers(self.model)
        if any(layer.failed_without_callback for layer in self.prunable_layers):
            self._recover_from_failed_step()
        for layer in self.prunable_layers:
            layer.step_callback_ready = True
            step = getattr(layer, "pruning_step", None)
            if step is not None and int(ops.convert_to_numpy(step)) == -1:
                step.assign(0)

    def _recover_from_failed_step(self):
        """A fit without this callback failed in its first step; this fit must retrace."""
        for layer in self.prunable_layers:
            layer.failed_without_callback = False
        if keras.backend.backend() == "jax" and any(
            getattr(v, "_value", True) is None for v in self.model.variables
        ):
            raise ValueError(
                "This model has no variable values left: under the JAX backend, Keras drops "
                "them from the model when the first training step fails, as the earlier fit "
                "without UpdatePruningStep did. Re-create (or reload) the pruned model, then "
                "fit it with callbacks=[spruce.UpdatePruningStep()]."
            )
        if getattr(self.model, "make_train_function", None) is not None:
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        # Keep the stored weights masked, so that a saved or stripped model is sparse.
        for layer in self.prunable_layers:
            layer.apply_masks()

    def on_train_end(self, logs=None):
        self.on_epoch_end(None)


def pruning_scalars(model):
    """`{tag: value}`: per pruned weight, the sparsity of its mask and its threshold.

    Tags are `<layer name>/<weight name>/sparsity` and `.../threshold`.
    """
    scalars = {}
    for layer in collect_prunable_layers(model):
        for weight, mask, threshold in layer.pruning_vars:
            prefix = f"{layer.layer.name}/{weight.name}"
            mask_value = ops.convert_to_numpy(mask)
            scalars[f"{prefix}/sparsity"] = float(1.0 - mask_value.mean())
            scalars[f"{prefix}/threshold"] = float(ops.convert_to_numpy(threshold))
    return scalars


class PruningSummaries(keras.callbacks.Callback):
    """Writes pruning scalars for TensorBoard into `log_dir`.

    Args:
        log_dir: folder for the event files (created if missing).
        update_freq: 'epoch' (default), 'batch', or an int N: write every N batches.
    """

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        super().__init__()
        if kwargs:
            # tfmot's PruningSummaries inherits keras.callbacks.TensorBoard's arguments.
            raise ValueError(
                "PruningSummaries takes only `log_dir` and `update_freq`; for losses, "
                "histograms and graphs add keras.callbacks.TensorBoard as well. Received: "
                f"{sorted(kwargs)}"
            )
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(f"`log_dir` must be a folder path. Received: log_dir={log_dir!r}")
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                "`update_freq` must be 'epoch', 'batch' or a positive int. "
                f"Received: update_freq={update_freq!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def _step(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and getattr(optimizer, "iterations", None) is not None:
            return int(ops.convert_to_numpy(optimizer.iterations))
        return self._batches

    def _write(self):
        if self._writer is None:
            self._writer = EventFileWriter(self.log_dir)
        self._writer.add_scalars(pruning_scalars(self.model), self._step())

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            sync = getattr(self.model, "jax_state_sync", None)
            if sync is not None:  # JAX keeps the variables in its own state mid-epoch
                sync()
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# -- TensorBoard event files: TFRecord framing of Event protocol buffers ---------


def _crc32c_table():
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table[i] = crc
    return [int(v) for v in table]


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value):
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number, wire_type):
    return _varint((number << 3) | wire_type)


def _length_delimited(number, payload):
    return _field(number, 2) + _varint(len(payload)) + payload


def _event(wall_time, step, file_version=None, scalars=None):
    """tensorflow.Event: wall_time=1 (double), step=2 (int64), file_version=3, summary=5."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        summary = b""
        for tag, value in scalars.items():
            # Summary.Value: tag=1 (string), simple_value=2 (float)
            value_msg = _length_delimited(1, tag.encode()) + _field(2, 5) + struct.pack(
                "<f", value
            )
            summary += _length_delimited(1, value_msg)
        out += _length_delimited(5, summary)
    return out


class EventFileWriter:
    """Appends scalar events to `log_dir/events.out.tfevents.<time>.<host>.<pid>.spruce`."""

    def __init__(self, log_dir):
        os.makedirs(log_dir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.spruce"
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "ab")
        self._record(_event(time.time(), 0, file_version="brain.Event:2"))

    def _record(self, data):
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", _masked_crc32c(header)))
        self._file.write(data + struct.pack("<I", _masked_crc32c(data)))
        self._file.flush()

    def add_scalars(self, scalars, step):
        self._record(_event(time.time(), int(step), scalars=scalars))

    def close(self):
        self._file.close()
