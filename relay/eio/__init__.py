"""A lean websocket front for Socket.IO viewers (Engine.IO v4, Socket.IO v5, root namespace)."""
