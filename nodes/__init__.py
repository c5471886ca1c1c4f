"""Node functions, typed routers and the device bridge shared by the graphs."""
