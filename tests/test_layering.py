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


def test_ike_uses_only_the_routers_public_api() -> None:
    """ike.py drives routers through their public methods (``install_sas``,
    ``set_entry_flows``, ``select_outbound``, ``on_sa_deleted``, ...): it reads or sets
    no private attribute of another object (``x._name`` where x is not self / cls),
    assigns no router entry's ``spd`` / ``acl``, and reaches nothing by
    ``getattr`` / ``setattr``."""
    tree = ast.parse((PKG / "ike.py").read_text())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") \
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            problems.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute) and sub.attr in ("spd", "acl", "entries"):
                        problems.append(f"line {node.lineno}: assigns {ast.unparse(t)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "vars"):
            problems.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not problems, problems
