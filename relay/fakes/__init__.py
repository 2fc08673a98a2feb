"""Fake gateways for development and tests: Evolution API v2 and WPPConnect Server in-process,
speaking the exact payloads of shared/fixtures over real HTTP, Socket.IO and webhooks.

Used by ``relay demo`` and the test suite; never imported by ``relay serve`` (a test checks it).
"""

from .evolution import EvolutionEmulator
from .wppconnect import WPPConnectEmulator

__all__ = ["EvolutionEmulator", "WPPConnectEmulator"]
