"""Test-wide settings: quiet TensorFlow, tensorflow backend, fixed seeds, the tiny test architecture."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import finegrain  # noqa: E402,F401  (before any test imports TensorFlow: sets its CPU-kernel default as for users)
import tests.tiny_arch  # noqa: E402,F401  (registers `tiny_test_net` with the model registry)
