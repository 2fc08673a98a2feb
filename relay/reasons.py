"""Why an instance is not connected: the one table of reason codes.

``reason`` in a snapshot is ``{code, message, gateway}``. Pages and host apps branch on ``code``
(stable, lowercase, documented in the README) and translate it; ``message`` is a plain default
sentence; ``gateway`` is the gateway's own status and words, for operators.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Reason(TypedDict):
    code: str
    message: str
    gateway: dict[str, Any] | None


# code → default message (what a person at the phone can act on).
MESSAGES: dict[str, str] = {
    "logged_out": "WhatsApp was logged out on the phone. Scan a new QR code to link it again.",
    "removed": "This WhatsApp connection was deleted on the gateway.",
    "qr_limit": "Too many QR codes were shown without being scanned. Ask for a new QR code.",
    "no_qr": "The gateway has not produced a QR code. It may not be able to reach WhatsApp.",
    "timed_out": "The QR code was not scanned in time. Ask for a new QR code.",
    "replaced": "WhatsApp was opened on another computer or browser.",
    "scan_failed": "The phone could not link with this QR code. Ask for a new QR code.",
    "closed": "The WhatsApp connection was closed.",
}

# When the instance stays closed, a newer close never hides an older, more telling one: a
# deleted instance's logout events (they come in any order) must not turn "removed" into
# "logged out", nor the logout that follows Evolution's QR limit turn "qr_limit" into it.
RANK: dict[str, int] = {"removed": 3, "qr_limit": 2}


def reason(code: str, gateway: dict[str, Any] | None = None, message: str | None = None) -> Reason:
    """A reason from the table (``message`` overrides the default sentence)."""
    return Reason(code=code, message=message or MESSAGES[code], gateway=gateway)


def rank(value: Reason | None) -> int:
    """How telling a close reason is (0 for none)."""
    if value is None:
        return 0
    return RANK.get(value["code"], 1)
