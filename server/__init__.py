"""The service around the graphs: HTTP API in the LangGraph server's shape, the device
WebSocket, the run queue and the scheduler. Empty until the server issue lands; the graphs
run today through `relaygraph run` and `langgraph dev`.
"""
