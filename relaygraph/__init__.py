"""The application shell: the command line, and the driver that joins a graph, a
checkpointer and a device for runs outside the server (`relaygraph run`, tests, benchmarks).
"""
