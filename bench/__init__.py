"""Benchmarks, not tests: costs of the graphs and the server, as ratios against a baseline
run in the same process.

Nothing here asserts anything or runs under pytest. A benchmark measures what the relaygraph
graphs and server cost against that baseline (bare LangGraph, or the same run at a smaller
size), prints the numbers, and on request (`--write-docs`) records them in
`docs/benchmarks.md`. Run one as a module, for example `.venv/bin/python -m bench.round_trip`.
"""
