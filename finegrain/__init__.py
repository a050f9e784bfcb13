"""finegrain: fine-grained image recognition by transfer learning with Assemble-ResNet.

Importing the package is cheap: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
