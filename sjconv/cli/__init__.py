"""Command-line tools (thin wrappers live in ``examples/``)."""
