"""One module per graph; each ends in `graph = build()`, compiled with no checkpointer."""
