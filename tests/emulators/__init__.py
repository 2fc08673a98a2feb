"""In-process gateway emulators (Evolution API v2, WPPConnect Server) for tests and demo mode."""

from .evolution import EvolutionEmulator
from .wppconnect import WPPConnectEmulator

__all__ = ["EvolutionEmulator", "WPPConnectEmulator"]
