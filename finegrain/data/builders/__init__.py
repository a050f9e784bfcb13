"""tensorflow-datasets builders for the data sets tfds lacks; importing this package registers them with tfds.

It imports tensorflow_datasets, so only `finegrain.data.tfds_source` imports it, inside its functions.
A builder here is loaded by name like tfds' own ones (`tfds.builder(name)`), keeps its archive's
registered size and sha256 in `url_infos`, and reads that archive from the manual dir when it is there.
"""

from finegrain.data.builders.aircraft import FgvcAircraft2013b

__all__ = ["FgvcAircraft2013b"]
