"""One module per graph; each ends in `graph = build()`, compiled with no checkpointer."""

#: The recursion limit every run of these graphs is given (`relaygraph run` and the server):
#: a chunked run takes several supersteps per device round trip.
RECURSION_LIMIT = 200
