"""make bench: load generator, floor measurements and the report."""
