"""Type stubs for the compiled ESP / AH core (src/_esp.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

STATUS_CODES: dict[str, int]
MODE_IDS: dict[str, int]
OVERHEAD: int
SPI_OK: int
SPI_OTHER: int
SPI_CLEAR: int
SPI_FRAGMENT: int
SPI_OPTIONS: int
SPI_TRUNCATED: int
SPI_UNKNOWN: int

class SaCore:
    closed: bool
    def __init__(
        self,
        protocol: int,
        cipher: int,
        auth: int,
        cipher_key: bytes,
        auth_key: bytes,
        icv_len: int,
        spi: int,
        esn: bool = ...,
        local: int = ...,
        peer: int = ...,
        replay_window: int = ...,
        seq: int = ...,
        iv_next: int = ...,
        ip_id: int = ...,
    ) -> None: ...
    def close(self) -> None: ...
    def key_material_wiped(self) -> bool: ...
    @property
    def seq(self) -> int: ...  # read-only: a sequence number never goes back
    @property
    def rx_top(self) -> int: ...
    @property
    def iv_next(self) -> int: ...
    @property
    def ip_id(self) -> int: ...
    @property
    def iv_length(self) -> int: ...
    @property
    def overhead(self) -> int: ...
    def counters(self) -> tuple[int, int, int, int, list[int]]: ...
    def max_growth(self, mode: int, encap: bool = ...) -> int: ...
    def encapsulate(
        self,
        buf: npt.NDArray[np.uint8],
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        out: npt.NDArray[np.uint8],
        out_offsets: npt.NDArray[np.int64],
        out_lengths: npt.NDArray[np.int64],
        status: npt.NDArray[np.uint8],
        ivs: npt.NDArray[np.uint8],
        mode: int,
        random_iv: bool = ...,
        next_header: int = ...,
        placed: bool = ...,
    ) -> int: ...
    def decapsulate(
        self,
        buf: npt.NDArray[np.uint8],
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        out: npt.NDArray[np.uint8],
        out_offsets: npt.NDArray[np.int64],
        out_lengths: npt.NDArray[np.int64],
        status: npt.NDArray[np.uint8],
        mode: int,
        next_headers: npt.NDArray[np.uint8] | None = ...,
        placed: bool = ...,
    ) -> int: ...

def hmac(auth: int, key: Any, data: Any, out_len: int) -> bytes: ...
def live_contexts() -> int: ...
def run_multi(
    cores: list[SaCore] | tuple[SaCore, ...],
    sa_index: npt.NDArray[np.int32],
    modes: npt.NDArray[np.uint8],
    buf: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    out: npt.NDArray[np.uint8],
    out_offsets: npt.NDArray[np.int64],
    out_lengths: npt.NDArray[np.int64],
    status: npt.NDArray[np.uint8],
    ivs: npt.NDArray[np.uint8] | None,
    encap: bool,
    random_iv: bool = ...,
    next_header: int = ...,
    next_headers: npt.NDArray[np.uint8] | None = ...,
    sa_part: npt.NDArray[np.int32] | None = ...,
    part: int = ...,
    selectors: npt.NDArray[np.uint32] | None = ...,
    in_selector: npt.NDArray[np.uint8] | None = ...,
) -> int: ...
def random_fill(out: npt.NDArray[np.uint8]) -> None: ...

def spi_lookup(
    buf: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    local: int,
    keys: npt.NDArray[np.int64],
    kinds: npt.NDArray[np.uint8],
    slots: npt.NDArray[np.int32],
) -> None: ...
