"""Phone numbers typed by a person who links WhatsApp with a code instead of a QR."""

from __future__ import annotations

import re

from .errors import RelayError

_SEPARATORS = re.compile(r"[\s().\-]")


class BadNumber(RelayError):
    code = "bad_number"
    status = 400


def phone_number(raw: object) -> str:
    """The number as the gateways want it: country code and number, digits only (E.164 without
    the +). Spaces, dots, dashes, parentheses and a leading + are forgiven; anything else is a
    clear 400."""
    hint = ("send the phone number with its country code, digits only, "
            "e.g. {\"number\": \"5511999999999\"}")
    if not isinstance(raw, str):
        raise BadNumber(f"'number' must be a string: {hint}")
    digits = _SEPARATORS.sub("", raw.strip())
    digits = digits[1:] if digits.startswith("+") else digits
    if not digits.isascii() or not digits.isdigit():
        raise BadNumber(f"'number' may only hold digits: {hint}")
    if not 10 <= len(digits) <= 15 or digits.startswith("0"):
        raise BadNumber(f"'number' must be 10 to 15 digits, starting with the country code: {hint}")
    return digits
