"""finegrain.data: the catalog of data sets, tfds fetch, own folders, the synthetic set, tf.data pipelines.

Importing this package does not import TensorFlow (the CLI relies on that); `load_split` and the
`pipeline` module do, when called / imported.
"""

from finegrain.data.catalog import CATALOG, DATA_DIR_ENV, DatasetRecord, default_data_dir, get_record
from finegrain.data.splits import Split, load_split

__all__ = ["CATALOG", "DATA_DIR_ENV", "DatasetRecord", "Split", "default_data_dir", "get_record", "load_split"]
