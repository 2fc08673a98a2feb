"""Real parts for tests: free ports, a killable redis-server, the relay under real uvicorn."""
