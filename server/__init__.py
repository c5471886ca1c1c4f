"""The service around the graphs (`relaygraph serve`): the HTTP API in the LangGraph server's
shape, the device WebSocket, the run queue and the cron scheduler."""
