"""The benchmark suite (`make bench`): real peers, a Node load generator, a markdown report.

See docs/benchmarks/README.md for the latest results and how they are measured.
"""
