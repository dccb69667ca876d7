"""Sections of `python -m benchmarks`: kernel, model, resolution, memory (one module each)."""
