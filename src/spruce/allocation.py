"""Sparsity allocation: how a model's target sparsity is shared among its pruned layers.

A uniform allocation prunes every layer to the same sparsity. The Erdos-Renyi allocation
(ERK, as in RigL: Evci et al., 2020) keeps the same share of zeros over all weights but gives
each layer a density proportional to (n_in + n_out) / (n_in * n_out): small layers, whose
weights are each worth more, keep more of them.
"""

import numbers

import numpy as np


def _check_shapes(shapes):
    try:
        pairs = [tuple(s) for s in shapes]
    except TypeError:
        pairs = None
    if not pairs or not all(
            len(p) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                                for v in p) for p in pairs):
        raise ValueError("shapes must be a non-empty list of (n_in, n_out) pairs of positive integers, "
                         f"one per pruned layer. Received: shapes={shapes!r}")
    return [(int(a), int(b)) for a, b in pairs]


def _check_sparsity(sparsity):
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1). Received: sparsity={sparsity!r}")
    return float(sparsity)


def erk_sparsities(shapes, sparsity, cap_at_dense=False):
    """Per-layer sparsities that average `sparsity` over all weights, allocated by ERK.

    Args:
        shapes: one (n_in, n_out) pair per layer: the matrix its kernel is pruned as
            (a 1x1 convolution's input and output channels, a Dense layer's units).
        sparsity: the share of zeros over all the layers' weights together, in [0, 1).
        cap_at_dense: what to do when ERK would give a layer a density above 1 (more weights
            than it has), which happens at low sparsities with layers of very different sizes.
            False raises ValueError; True keeps such layers dense (sparsity 0) and shares the
            rest of the budget among the others by the same formula, as RigL does.

    Returns a list of sparsities, one per layer, in the order of `shapes`. With block
    pruning each layer's sparsity counts its blocks, so the total holds up to rounding to
    whole blocks.
    """
    shapes = _check_shapes(shapes)
    sparsity = _check_sparsity(sparsity)
    sizes = np.array([a * b for a, b in shapes], np.float64)
    score = np.array([(a + b) / (a * b) for a, b in shapes], np.float64)
    dense = np.zeros(len(shapes), bool)
    while not dense.all():  # at sparsity 0 every layer ends dense
        budget = (1.0 - sparsity) * sizes.sum() - sizes[dense].sum()  # weights left to keep
        density = np.where(dense, 1.0, budget / (score * sizes)[~dense].sum() * score)
        over = ~dense & (density > 1.0)
        if not over.any():
            return (1.0 - density).tolist()
        if not cap_at_dense:
            raise ValueError(
                f"ERK allocation needs a layer denser than 1 (more weights than it has) for "
                f"sparsity={sparsity}. Received: shapes={shapes}. Use a higher sparsity, a uniform "
                "allocation, or cap_at_dense=True to keep such layers dense.")
        dense |= over
    return [0.0] * len(shapes)


def allocate_erk(model, cap_at_dense=False):
    """Give each layer wrapped by `spruce.prune_low_magnitude` its ERK share of the sparsity.

    Every wrapper in `model` must carry the same `PolynomialDecay` or `ConstantSparsity`
    schedule (as `prune_low_magnitude(model, pruning_schedule=...)` gives them). Each one's
    schedule is replaced by a copy whose final sparsity is the layer's ERK sparsity (see
    `erk_sparsities`, which takes `cap_at_dense`); a `PolynomialDecay` keeps its steps, its
    power and the ratio of its initial to its final sparsity. Kernels are seen as the matrix
    (all input dimensions, output channels). Call it before training. Returns
    {layer name: final sparsity}.
    """
    from spruce.schedules import ConstantSparsity, PolynomialDecay
    from spruce.wrapper import collect_prunable_layers

    wrappers = collect_prunable_layers(model)
    if not wrappers:
        raise ValueError("allocate_erk needs a model wrapped by spruce.prune_low_magnitude; "
                         f"{getattr(model, 'name', model)!r} has no pruned layer. Wrap it first.")
    schedule = wrappers[0].pruning_schedule
    if not isinstance(schedule, (PolynomialDecay, ConstantSparsity)):
        raise ValueError("allocate_erk scales PolynomialDecay and ConstantSparsity schedules. "
                         f"Received: pruning_schedule={schedule!r}")
    differ = [w.layer.name for w in wrappers if w.pruning_schedule != schedule]
    if differ:
        raise ValueError("allocate_erk needs one schedule shared by every pruned layer; "
                         f"{differ} differ from {wrappers[0].layer.name}'s {schedule!r}. Wrap the "
                         "model with a single pruning_schedule.")
    shapes = []
    for w in wrappers:
        kernel = getattr(w.layer, "kernel", None)
        if kernel is None:
            raise ValueError(f"allocate_erk needs built layers with a kernel; {w.layer.name!r} has none. "
                             "Build the model (call it once, or give it an Input) first.")
        shapes.append((int(np.prod(kernel.shape[:-1])), int(kernel.shape[-1])))
    finals = erk_sparsities(shapes, schedule.final_sparsity, cap_at_dense=cap_at_dense)
    for wrapper, final in zip(wrappers, finals):
        wrapper.pruning_schedule = _scaled(schedule, final)
    return {w.layer.name: final for w, final in zip(wrappers, finals)}


def _scaled(schedule, final):
    """`schedule` with its final sparsity moved to `final` (its initial one in proportion)."""
    from spruce.schedules import ConstantSparsity, PolynomialDecay

    if isinstance(schedule, ConstantSparsity):
        return ConstantSparsity(final, schedule.begin_step, schedule.end_step, schedule.frequency)
    ratio = schedule.initial_sparsity / schedule.final_sparsity if schedule.final_sparsity else 0.0
    return PolynomialDecay(initial_sparsity=final * ratio, final_sparsity=final,
                           begin_step=schedule.begin_step, end_step=schedule.end_step,
                           power=schedule.power, frequency=schedule.frequency)
