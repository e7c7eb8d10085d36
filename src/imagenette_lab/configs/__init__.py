"""Built-in run recipes (YAML), addressed by file name without `.yaml`."""
