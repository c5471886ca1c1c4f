"""HTTP and WebSocket routers, one per resource, in the LangGraph server's shape."""
