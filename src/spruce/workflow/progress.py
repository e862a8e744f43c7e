"""Progress display for `spruce run`: tqdm bars on stderr, so stdout stays clean for --json."""

import sys

import keras


def log(msg, quiet):
    """One line of `spruce run`'s running commentary on stderr, unless `quiet`."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def bar(total, desc, enabled=True, unit="it"):
    """A tqdm bar on stderr (a silent one when `enabled` is false or tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        enabled = False
        tqdm = None
    if not enabled:
        return _Silent()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)


class _Silent:
    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FitProgress(keras.callbacks.Callback):
    """One bar per epoch of `fit`, with loss and accuracy; validation figures at epoch end."""

    def __init__(self, label, steps_per_epoch, enabled=True):
        super().__init__()
        self.label, self.steps, self.enabled = label, steps_per_epoch, enabled
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        total = self.params.get("epochs", "?")
        self._bar = bar(self.steps, f"{self.label} epoch {epoch + 1}/{total}", self.enabled, "batch")

    def on_train_batch_end(self, batch, logs=None):
        self._bar.update(1)
        if logs and batch % 20 == 0:
            self._bar.set_postfix(_fmt(logs), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            self._bar.set_postfix(_fmt(logs))
        self._bar.close()


def _fmt(logs):
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    return {k.replace("accuracy", "acc"): f"{float(logs[k]):.4f}" for k in keys if k in logs}
