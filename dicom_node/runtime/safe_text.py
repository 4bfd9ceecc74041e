"""Header values made safe to print: a log line or a `status` row shows exactly one line per record.

DICOM values come from the sender (UIDs, accession numbers, patient IDs, descriptions) and may hold
anything, a newline included; peers' answers (an HL7 ACK) likewise. `clean` escapes every control,
format (bidirectional overrides) and line/paragraph separator character as `\\xNN` / `\\uNNNN`, so a value
cannot forge or hide lines, and shortens it to `limit` characters.
"""

from __future__ import annotations

import unicodedata

_UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def clean(value: object, limit: int = 256) -> str:
    """`value` as text with unsafe characters escaped, at most `limit` characters (then `…`)."""
    text = "" if value is None else str(value)
    if text.isprintable() and len(text) <= limit:  # the common case: nothing to do
        return text
    out = []
    for ch in text:
        if ch == "\\" or unicodedata.category(ch) not in _UNSAFE:
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    escaped = "".join(out)
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"
