"""Thin CLI glue: one module per subcommand; the work lives in the library modules."""
