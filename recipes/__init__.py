"""The shipped recipes (installed as the package `finegrain.recipes`; one YAML file per recipe)."""
