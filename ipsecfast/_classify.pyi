"""Type stub of the compiled classifier core (src/_classify.pyx)."""

import numpy as np
import numpy.typing as npt

OK: int
TRUNCATED: int
BAD_IP_HEADER: int

class Forest:
    max_depth: int
    max_leaf: int
    nleaves: int
    def __init__(
        self,
        lo: npt.NDArray[np.uint32],
        hi: npt.NDArray[np.uint32],
        masks: npt.NDArray[np.uint32],
        icmp: npt.NDArray[np.int16],
        flags: npt.NDArray[np.uint8],
        where: npt.NDArray[np.int32],
        group: npt.NDArray[np.int32],
        ngroups: int,
        binth: int = ...,
        spfac: float = ...,
        budget: int = ...,
    ) -> None: ...
    @property
    def nbytes(self) -> int: ...
    def export(self) -> dict[str, npt.NDArray[np.int64]]: ...
    def stats(self) -> dict[str, int]: ...

FIELD_SRC: int
FIELD_DST: int
FIELD_SPORT: int
FIELD_DPORT: int
FIELD_PROTO: int
FIELD_TOS: int
FIELD_BYTE0: int
FIELD_FRAG: int
FIELDS: int

class Compiled:
    @property
    def whole(self) -> Forest: ...
    @property
    def frag(self) -> Forest: ...
    @property
    def nlists(self) -> int: ...
    def __init__(self, whole: Forest, frag: Forest, nlists: int = ...) -> None: ...
    def match_lists(
        self,
        buf: npt.NDArray[np.uint8],
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        want: npt.NDArray[np.int32],
        mirror: bool,
        max_rows: int,
        entries: npt.NDArray[np.int32],
        status: npt.NDArray[np.uint8],
        fields: npt.NDArray[np.uint32] | None = ...,
    ) -> None: ...
    def classify_packets(
        self,
        buf: npt.NDArray[np.uint8],
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        mirror: bool,
        lists: npt.NDArray[np.int32],
        entries: npt.NDArray[np.int32],
        status: npt.NDArray[np.uint8],
        scalar: bool = ...,
        fields: npt.NDArray[np.uint32] | None = ...,
    ) -> None: ...
    def classify_fields(
        self,
        proto: npt.NDArray[np.int64],
        src: npt.NDArray[np.int64],
        dst: npt.NDArray[np.int64],
        sport: npt.NDArray[np.int64],
        dport: npt.NDArray[np.int64],
        frag: npt.NDArray[np.int64],
        icmp_type: npt.NDArray[np.int64],
        icmp_code: npt.NDArray[np.int64],
        tcp_flags: npt.NDArray[np.int64],
        tos: npt.NDArray[np.int64],
        mirror: bool,
        lists: npt.NDArray[np.int32],
        entries: npt.NDArray[np.int32],
        scalar: bool = ...,
    ) -> None: ...
    @property
    def nbytes(self) -> int: ...

