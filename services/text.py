"""Text the database can store and a person can read back as they meant it.

Refused in names and emails: unpaired UTF-16 surrogates (U+D800-U+DFFF; no UTF-8 encoding
exists for them, so the driver would fail mid-write), the C0 and C1 control characters
(U+0000-U+001F, U+007F-U+009F: NUL truncates in many C clients, the rest move terminals
and log viewers), and the bidirectional embedding, override and isolate controls
(U+202A-U+202E, U+2066-U+2069: they make a name display as other text, the Trojan Source
trick), plus the noncharacters U+FFFE and U+FFFF. Everything else of Unicode is allowed,
combining marks, zero-width joiners in emoji and right-to-left scripts included.
"""

import re

UNSTORABLE = re.compile("[\ud800-\udfff\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")


def is_storable(text: str) -> bool:
    return UNSTORABLE.search(text) is None


def storable(text: str) -> str:
    """The text without the characters this module refuses, for text nobody can correct
    (a name from an identity provider's token)."""
    return UNSTORABLE.sub("", text)
