"""The one place that knows python-socketio, python-engineio and uvicorn beyond their documented
API; their versions are pinned in pyproject.toml for that reason.

- :mod:`.sio`: pre-encoded fan-out, bounded viewer queues, sockets that never authenticate.
- :mod:`.http`: limits on the HTTP front (header size and time, body time, connections).
- :mod:`.run`: "ready" once bound; several workers handed the parent's settings.
"""

from .http import GuardedHttp, Limits
from .run import AnnouncingServer, run_workers
from .sio import RelayManager, create_server

__all__ = ["AnnouncingServer", "GuardedHttp", "Limits", "RelayManager", "create_server",
           "run_workers"]
