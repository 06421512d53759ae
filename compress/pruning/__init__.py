"""Structured pruning through torch-pruning's dependency graph."""
