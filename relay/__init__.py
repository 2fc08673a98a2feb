"""relay: pushes WhatsApp login QR codes and connection state from a gateway to browsers."""

__version__ = "0.1.0"
