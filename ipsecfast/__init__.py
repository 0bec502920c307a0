"""ipsecfast: an IPsec data plane for Python with Cisco IOS crypto-map semantics.

The public names are imported lazily, so ``import ipsecfast`` stays cheap and a
module is only loaded (and its compiled core only required) when it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "PacketBatch": "packets",
    "Ipv4Fields": "packets",
    "Status": "status",
    "Capture": "pcap",
    "IpsecError": "exceptions",
    "ConfigError": "exceptions",
    "UnsupportedTransform": "exceptions",
    "PcapError": "exceptions",
    "InternalError": "exceptions",
    "SecurityAssociation": "sa",
    "SaBundle": "sa",
    "SaResult": "sa",
    "Transform": "transform",
    "AccessList": "acl",
    "Ace": "acl",
    "PacketFields": "acl",
    "Classifier": "classifier",
    "parse_config": "config",
    "Config": "config",
    "Router": "router",
    "Network": "ike",
}

__all__ = sorted(_EXPORTS) + ["pcap", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .acl import AccessList as AccessList
    from .acl import Ace as Ace
    from .acl import PacketFields as PacketFields
    from .exceptions import ConfigError as ConfigError
    from .exceptions import InternalError as InternalError
    from .exceptions import IpsecError as IpsecError
    from .exceptions import PcapError as PcapError
    from .exceptions import UnsupportedTransform as UnsupportedTransform
    from .packets import Ipv4Fields as Ipv4Fields
    from .packets import PacketBatch as PacketBatch
    from .status import Status as Status


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name == "pcap":
        return importlib.import_module(".pcap", __name__)
    raise AttributeError(f"module 'ipsecfast' has no attribute {name!r}")
