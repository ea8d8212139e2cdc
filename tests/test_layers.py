"""Dependencies run one way between the rooms (ARCHITECTURE.md): a module may import only
what its room is allowed to know about. Read from the source with `ast`, so a lazy import
inside a function counts too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ponder"

# room -> imports it must never make (prefix match on the module name)
FORBIDDEN = {
    "ponder.search": ["ray", "torch", "transformers", "vllm", "redis", "fastapi", "ponder.actors",
                      "ponder.scheduler", "ponder.jobs", "ponder.api", "ponder.tasks.arith.train"],
    "ponder.tasks": ["ray", "redis", "ponder.actors", "ponder.scheduler", "ponder.jobs", "ponder.api"],
    "ponder.actors": ["redis", "fastapi", "ponder.scheduler", "ponder.jobs", "ponder.api"],
    "ponder.scheduler": ["redis", "fastapi", "torch", "transformers", "vllm", "ponder.jobs", "ponder.api"],
    "ponder.jobs": ["fastapi", "torch", "transformers", "vllm", "ponder.api", "ponder.actors"],
    # Rendering manifests needs the config and the strategy names, nothing that runs searches.
    "ponder.deploy": ["ray", "torch", "transformers", "vllm", "redis", "fastapi", "ponder.actors",
                      "ponder.scheduler", "ponder.jobs", "ponder.api", "ponder.tasks"],
}

# Allowed on purpose: training the shipped PRM reads its q values through the hf engine, the
# same code that serves it, so training and serving cannot drift apart.
EXEMPT = {("ponder.tasks.arith.train", "ponder.actors.engine"), ("ponder.tasks.arith.train", "ponder.actors.hf")}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def test_rooms_import_only_downwards():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        mod = module_name(path)
        for room, banned in FORBIDDEN.items():
            if mod == room or mod.startswith(room + "."):
                for imp in imports(path):
                    if (mod, imp) not in EXEMPT and any(imp == b or imp.startswith(b + ".") for b in banned):
                        bad.append(f"{mod} imports {imp}")
    assert not bad, "; ".join(bad)
