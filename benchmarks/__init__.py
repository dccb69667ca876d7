"""Benchmarks of vheat-kernels: `python -m benchmarks [--quick] [--only kernel,model,resolution,memory]`.

bench_hco.py is the standalone kernel table; suite/ holds the sections of the full suite;
report.py renders docs/benchmarks.md from the suite's JSON.
"""
