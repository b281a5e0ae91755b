"""Experiments and benchmarks over fedrp: scripts that print JSON."""
