"""Pruning schedules: pure functions of the training step.

A schedule answers, for a step, ``(should_prune, sparsity)``: whether the masks
are recomputed at this step, and at which sparsity. The semantics are those of
``tfmot.sparsity.keras``:

- pruning happens at the steps ``begin_step, begin_step + frequency, ...`` up to
  and including ``end_step`` (``end_step=-1``: forever);
- ``PolynomialDecay`` computes, in float32,
  ``final + (initial - final) * (1 - p) ** power`` with
  ``p = clip((step - begin_step) / (end_step - begin_step), 0, 1)``.

Schedules run on Python ints (exact float32 math in NumPy, returning a Python
``bool`` and ``float``) and on backend tensors inside a traced train step
(``keras.ops``, returning tensors). This module imports Keras only for the latter.
"""

import numbers

import numpy as np


def _is_tensor_step(step):
    return not isinstance(step, (numbers.Number, np.ndarray, np.generic))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value}")
    return int(value)


def _check_sparsity(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value}")
    return float(value)


def _check_steps(begin_step, end_step, frequency, allow_forever):
    begin_step = _check_int("begin_step", begin_step, 0)
    if isinstance(end_step, bool) or not isinstance(end_step, numbers.Integral):
        raise ValueError(f"`end_step` must be an integer. Received: end_step={end_step!r}")
    end_step = int(end_step)
    if end_step == -1 and not allow_forever:
        raise ValueError(
            "`end_step` must be a step after `begin_step`: this schedule needs an end to "
            f"decay towards. Received: end_step={end_step}"
        )
    if end_step != -1 and end_step < begin_step:
        raise ValueError(
            "`end_step` must be -1 (prune forever) or >= `begin_step`. "
            f"Received: begin_step={begin_step}, end_step={end_step}"
        )
    frequency = _check_int("frequency", frequency, 1)
    return begin_step, end_step, frequency


class PruningSchedule:
    """Base class: `schedule(step) -> (should_prune, sparsity)`.

    Subclasses implement `__call__` and `get_config`. `from_config` rebuilds the
    schedule from `get_config()`'s dict.
    """

    def __call__(self, step):
        raise TypeError(f"{type(self).__name__} must implement __call__(step).")

    def get_config(self):
        raise TypeError(f"{type(self).__name__} must implement get_config().")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def final_sparsity(self):
        """The sparsity the schedule ends at, or None when the schedule cannot tell."""
        return None

    def _should_prune(self, step, begin_step, end_step, frequency):
        """tfmot's rule: in [begin_step, end_step] and on a multiple of `frequency`."""
        if not _is_tensor_step(step):
            step = int(step)
            in_range = step >= begin_step and (end_step < 0 or step <= end_step)
            return bool(in_range and (step - begin_step) % frequency == 0)
        from keras import ops

        in_range = ops.greater_equal(step, begin_step)
        if end_step >= 0:
            in_range = ops.logical_and(in_range, ops.less_equal(step, end_step))
        on_turn = ops.equal(ops.mod(step - begin_step, frequency), 0)
        return ops.logical_and(in_range, on_turn)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step in [begin_step, end_step]."""

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=True
        )

    @property
    def final_sparsity(self):
        return self.target_sparsity

    def __call__(self, step):
        should_prune = self._should_prune(step, self.begin_step, self.end_step, self.frequency)
        if not _is_tensor_step(step):
            return should_prune, float(np.float32(self.target_sparsity))
        from keras import ops

        return should_prune, ops.convert_to_tensor(self.target_sparsity, dtype="float32")

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity`, fast then slow.

    `sparsity(step) = final + (initial - final) * (1 - p) ** power`, with
    `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)`
    (Zhu & Gupta, 2017). Masks are recomputed every `frequency` steps from
    `begin_step` to `end_step` inclusive.
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self._final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=False
        )
        if self.end_step == self.begin_step:
            raise ValueError(
                "`end_step` must be greater than `begin_step` for PolynomialDecay (the decay "
                f"divides by end_step - begin_step). Received: begin_step={begin_step}, "
                f"end_step={end_step}. For a single pruning step use ConstantSparsity."
            )
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or power <= 0:
            raise ValueError(f"`power` must be a number > 0. Received: power={power!r}")
        self.power = power

    @property
    def final_sparsity(self):
        return self._final_sparsity

    def __call__(self, step):
        should_prune = self._should_prune(step, self.begin_step, self.end_step, self.frequency)
        span = self.end_step - self.begin_step
        if not _is_tensor_step(step):
            f32 = np.float32
            p = np.minimum(f32(1.0), np.maximum(f32(0.0), f32(int(step) - self.begin_step) / f32(span)))
            sparsity = f32(self.initial_sparsity - self.final_sparsity) * np.power(
                f32(1.0) - p, f32(self.power)
            ) + f32(self.final_sparsity)
            return should_prune, float(np.float32(sparsity))
        from keras import ops

        progress = ops.cast(step - self.begin_step, "float32") / float(span)
        p = ops.minimum(1.0, ops.maximum(0.0, progress))
        decay = ops.power(1.0 - p, float(self.power))
        sparsity = float(self.initial_sparsity - self.final_sparsity) * decay + float(
            self.final_sparsity
        )
        return should_prune, ops.cast(sparsity, "float32")

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


_BUILTIN = {"ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay}


def serialize(schedule):
    """`{"class_name": ..., "config": ...}`, the form tfmot stores schedules in."""
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(
            "`pruning_schedule` must be a spruce PruningSchedule (ConstantSparsity, "
            f"PolynomialDecay or a subclass). Received: {schedule!r}"
        )
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config, custom_objects=None):
    """Rebuild a schedule from `serialize()`'s dict.

    Custom schedules are found in `custom_objects` or in Keras's registry of
    serializable objects (`keras.saving.register_keras_serializable`).
    """
    if isinstance(config, PruningSchedule):
        return config
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            "A serialized pruning schedule must be a dict with 'class_name' and 'config'. "
            f"Received: {config!r}"
        )
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or _BUILTIN.get(name)
    if cls is None:
        import keras

        cls = keras.saving.get_registered_object(name, custom_objects)
    if cls is None:
        raise ValueError(
            f"Unknown pruning schedule class {name!r}. Pass it in `custom_objects` or register "
            "it with @keras.saving.register_keras_serializable()."
        )
    return cls.from_config(config.get("config", {}))
