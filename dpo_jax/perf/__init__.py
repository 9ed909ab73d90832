"""Performance: the throughput benchmark of the real train step (`benchmark`)."""
