"""What XNNPACK's sparse path requires of a model: the rules, thresholds and fixes, once.

Read by the Keras policy (`spruce.policies`) and by the `.tflite` inspector (`spruce.tflite`);
imports neither Keras nor TensorFlow.
"""

# XNNPACK runs a region sparse only if its 1x1 convolutions hold more than 2/3 zeros
# (xnn_subgraph_rewrite_for_nchw: `num_zeroes * 3 <= num_params * 2` disables it).
XNNPACK_MIN_SPARSITY = 2 / 3
