"""Real parts for tests and benchmarks: ports and processes, a killable redis-server, the relay under real uvicorn or as processes, clients, gateway payloads, CPU/RSS of process trees."""
