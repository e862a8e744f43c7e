import os

# Keras reads its backend once, at import: default to TensorFlow unless the runner chose.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
