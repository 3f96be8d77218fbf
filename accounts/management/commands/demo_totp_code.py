"""Print the current TOTP code of the demo staff account (RFC 6238, 30 s, 6 digits)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from typing import Any

from django.core.management.base import BaseCommand

from accounts.mfa import DEMO_TOTP_SECRET


def totp_code(secret_base32: str, *, at: float | None = None, step: int = 30) -> str:
    key = base64.b32decode(secret_base32 + "=" * (-len(secret_base32) % 8), casefold=True)
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


class Command(BaseCommand):
    help = "Print the demo admin's current two-factor code (demo databases only)."

    def handle(self, *args: Any, **options: Any) -> None:
        remaining = 30 - int(time.time()) % 30
        self.stdout.write(f"{totp_code(DEMO_TOTP_SECRET)}  (valid for {remaining} more seconds)")
