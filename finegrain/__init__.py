"""finegrain: fine-grained image recognition by transfer learning with Assemble-ResNet.

Importing the package is cheap: TensorFlow is imported only by the modules that need it.
"""

import os

# TensorFlow switches its oneDNN CPU kernels on by default only on CPUs with AVX-512/AMX; elsewhere
# (AVX2 laptops, most CI runners) it falls back to Eigen kernels that measured 3-4x slower for a
# ResNet training step (benchmarks/bench_cpu_kernels.py). The variable is read when TensorFlow
# is first imported, so this only takes effect if finegrain is imported first; set it to 0 to opt out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
