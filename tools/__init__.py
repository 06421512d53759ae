"""Experiments and probes, not part of the product and not installed: run from the repository root as
`python -m tools.<name>` (stability, overhead, fuzz, skip_layernorm, inc_probe). They may import any package."""
