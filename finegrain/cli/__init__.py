"""The `finegrain` command line: parses, validates paths, calls one library function, renders.

No module under finegrain.cli imports TensorFlow at import time, so `finegrain --help` is instant.
"""
