"""Benchmarks, not tests: timings of the graphs against bare LangGraph baselines.

Nothing here asserts anything or runs under pytest. A benchmark measures how much the
relaygraph graphs cost on top of what LangGraph itself costs, prints the numbers, and on
request (`--write-docs`) records them in `docs/benchmarks.md`. Run one as a module, for
example `.venv/bin/python -m bench.round_trip`.
"""
