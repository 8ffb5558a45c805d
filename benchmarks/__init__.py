"""Benchmarks: each ``bench_*.py`` module has ``main()`` and prints ratios against peers."""
