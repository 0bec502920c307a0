"""Imports only go downwards (DESIGN.md §Layers); compiled modules only through facades."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ipsecfast"

# lower number = lower layer; a module may import its own layer or below.
LAYER = {
    "exceptions": 0, "status": 0,
    "packets": 1, "pcap": 1,
    "acl": 2, "transform": 2,
    "sa": 3, "cryptomap": 3, "classifier": 3, "sad": 3,
    "config": 4, "show": 4, "check": 4,
    "router": 5, "ike": 5,
    "demo": 6, "cli": 6, "wireshark": 6, "__main__": 7, "__init__": 7,
}
# which facade may import which compiled module
COMPILED_OWNERS = {"_esp": {"sa", "transform"}, "_classify": {"classifier"},
                   "_pcap": {"pcap", "packets"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ipsecfast."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ipsecfast."):
                    out.add(a.name.split(".")[1])
    return out


def test_imports_only_go_down() -> None:
    problems = []
    for path in sorted(PKG.glob("*.py")):
        me = path.stem
        assert me in LAYER, f"{me}.py is not placed in a layer in tests/test_layering.py"
        for dep in _imports(path):
            if dep.startswith("_") and dep != "__main__":
                if me not in COMPILED_OWNERS.get(dep, set()):
                    problems.append(f"{me} imports compiled {dep}")
                continue
            if dep in LAYER and LAYER[dep] > LAYER[me]:
                problems.append(f"{me} (layer {LAYER[me]}) imports {dep} (layer {LAYER[dep]})")
    assert not problems, problems
