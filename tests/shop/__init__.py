"""A small shop for the test suite: orders with a status and their lines (model-signal mode)."""
