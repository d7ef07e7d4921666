"""A DNS server for one name, for the balancer's tests: it answers the name the way Docker's
embedded DNS answers a compose service's (one A record per replica), on the loopback."""

import socket
import struct
import threading


class Resolver:
    """Answers A queries for `name` with `addresses` (TTL 1), NXDOMAIN for any other name,
    an empty answer for other types of `name`; UDP on 127.0.0.1, in a thread. `addresses`
    may be changed while it runs, as replicas come and go."""

    def __init__(self, name: str, addresses: tuple[str, ...]) -> None:
        self.name = name.lower()
        self.addresses = addresses
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port: int = self.socket.getsockname()[1]
        self.queries = 0
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while self._running:
            try:
                query, client = self.socket.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if (answer := self.answer(query)) is not None:
                self.queries += 1
                self.socket.sendto(answer, client)

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        ident, flags, questions = struct.unpack("!HHH", query[:6])
        if questions != 1:
            return None
        labels, offset = [], 12
        while offset < len(query) and (length := query[offset]):
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
        offset += 1
        if offset + 4 > len(query):
            return None
        qtype, _qclass = struct.unpack("!HH", query[offset : offset + 4])
        question = query[12 : offset + 4]
        name = ".".join(labels).lower()
        # QR, AA, the client's RD, RA.
        response_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080
        records = b""
        count = 0
        if name != self.name:
            response_flags |= 3  # NXDOMAIN
        elif qtype == 1:
            for address in self.addresses:
                # A pointer to the question's name, A, IN, TTL 1, 4 bytes.
                records += struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(address)
                count += 1
        # An EDNS OPT record in the query (HAProxy sends one) is not answered: the client
        # then takes the answer as plain DNS.
        header = struct.pack("!HHHHHH", ident, response_flags, 1, count, 0, 0)
        return header + question + records

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.socket.close()
