"""Hand-made JWTs, for tokens no honest library would produce."""

import base64
import hashlib
import hmac
import json
from typing import Any

_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes = b"") -> str:
    """A token signed with HMAC per its own header, or unsigned when the header says none."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    algorithm = str(header.get("alg"))
    digest = _HASHES.get(algorithm.upper())
    signature = b"" if digest is None else hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"
