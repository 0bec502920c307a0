"""Per-packet status / drop-reason codes. A leaf module: anyone may import it.

One numbering for the whole project so that a uint8 status array from any layer can be
counted with ``numpy.bincount`` and named with ``Status(code).label``. Codes below 32 are
produced by the compiled core (src/_esp.pyx must keep its ``ST_*`` constants equal to
these); codes from 32 on are policy decisions made by the Python layers (router).
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    OK = 0
    # --- compiled core (ESP / AH) ---
    TRUNCATED = 1  # shorter than the headers / IV / ICV it must hold
    BAD_IP_HEADER = 2  # not IPv4, bad IHL, total length disagrees with the packet
    BAD_PROTOCOL = 3  # decapsulating, but the IP protocol is not ESP (50) / AH (51)
    BAD_SPI = 4  # SPI is not this SA's
    REPLAY = 5  # sequence number already seen (inside the window)
    OUTSIDE_WINDOW = 6  # sequence number older than the window
    ICV_MISMATCH = 7  # integrity check failed (constant-time compare / AEAD tag)
    BAD_PADDING = 8  # ESP padding is not 1, 2, 3, ... (RFC 4303 §2.4)
    BAD_NEXT_HEADER = 9  # next header not allowed for this mode
    SEQ_EXHAUSTED = 10  # sending would wrap the sequence number (RFC 4303 §3.3.3)
    TOO_BIG = 11  # result would exceed 65535 bytes
    BAD_LENGTH = 12  # ciphertext not a multiple of the cipher block / misaligned
    FRAGMENT = 13  # an IP fragment of ESP/AH; reassembly is not done here
    INTERNAL = 14  # OpenSSL returned an error for this packet
    ECN_DROP = 15  # tunnel decap: outer CE over a Not-ECT inner packet (RFC 6040 §4.2)
    IV_EXHAUSTED = 16  # the per-SA counter IV would repeat (GCM/GMAC/ChaCha/CCM/CTR)
    BAD_INNER_PACKET = 17  # tunnel decap: the decrypted payload is not an IPv4 packet
    # --- policy (router), 32 and up ---
    NO_SA = 32  # the entry has no SA (manual / dynamic, or IKE has not made one yet)
    UNPROTECTED = 33  # inbound clear text that a crypto map entry says must be protected
    IP_OPTIONS = 34  # IPv4 options on the crypto path (the seed: IOS XE drops them)
    MULTICAST = 35  # a permit caught a multicast destination (never protected)
    BROADCAST = 36  # a permit caught a broadcast destination (never protected)
    INNER_FLOW_MISMATCH = 37  # decapsulated packet is not in the flow of its SA
    LIFETIME_EXPIRED = 38  # the SA reached its lifetime (seconds or kilobytes)
    NO_ACL = 39  # dynamic entry whose access list is empty or undefined: drop all
    UNKNOWN_SPI = 40  # ESP / AH for a local address with no SA (destination, protocol, SPI)

    @property
    def label(self) -> str:
        """Readable name, e.g. ``icv-mismatch``."""
        return self.name.lower().replace("_", "-")


def status_counts(status: object) -> dict[str, int]:
    """Count a status array by readable label (zero counts left out)."""
    import numpy as np

    arr = np.asarray(status, dtype=np.uint8)
    counts = np.bincount(arr, minlength=256)
    out: dict[str, int] = {}
    for code in np.nonzero(counts)[0]:
        try:
            name = Status(int(code)).label
        except ValueError:
            name = f"code-{int(code)}"
        out[name] = int(counts[code])
    return out
