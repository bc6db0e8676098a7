"""The layer order, as data, and the checker that enforces it (``tests/test_layers.py``).

    core (referral_platform) → programs → referrals → rewards → partners → top (analytics, engagement, demo)

A module may import its own layer and lower ones — at module level or inside a function alike. Lower
layers reach higher ones only through named hooks (referral_platform/hooks.py). Composition roots (the
URL confs, the WSGI entry point) wire everything together and may import any layer. Test modules are
not layered (a test of programs may drive the whole pipeline).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAYERS: dict[str, int] = {
    "referral_platform": 0,
    "programs": 1,
    "referrals": 2,
    "rewards": 3,
    "partners": 4,
    "analytics": 5,
    "engagement": 5,
    "portal": 5,
    "demo": 5,
    "onboarding": 5,
}
LAYER_NAMES = {0: "core", 1: "programs", 2: "referrals", 3: "rewards", 4: "partners", 5: "top"}
COMPOSITION_ROOTS = frozenset(
    {
        "referral_platform/urls.py",
        "referral_platform/api_urls.py",
        "referral_platform/wsgi.py",
    }
)
SKIPPED_PARTS = frozenset({"migrations", "tests", "__pycache__"})


@dataclass(frozen=True)
class UpwardImport:
    path: str
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: {self.importer} ({LAYER_NAMES[LAYERS[self.importer]]}) imports "
            f"{self.imported} ({LAYER_NAMES[LAYERS[self.imported.split('.')[0]]]}), a higher layer: "
            "call a hook instead (referral_platform/hooks.py)"
        )


def _imported_modules(tree: ast.AST, package: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module
            elif node.level > 0:
                # A relative import stays inside its own package (its own app): never upward.
                continue


def upward_imports(root: Path) -> list[UpwardImport]:
    """Every import in ``root``'s layered apps of a module of a higher layer."""
    found = []
    for app, level in LAYERS.items():
        app_dir = root / app
        if not app_dir.is_dir():
            continue
        for path in sorted(app_dir.rglob("*.py")):
            relative = path.relative_to(root)
            if SKIPPED_PARTS & set(relative.parts) or relative.as_posix() in COMPOSITION_ROOTS:
                continue
            if relative.parts[0] == "demo":
                continue  # the demo loader is a composition root of the top layer
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, module in _imported_modules(tree, app):
                target = LAYERS.get(module.split(".")[0])
                if target is not None and target > level:
                    found.append(UpwardImport(relative.as_posix(), line, app, module))
    return found
