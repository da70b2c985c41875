"""The package is layered: each module imports only from its own layer and
the layers before it (docs/architecture.md), so there is no import circle
and nothing imports upward (the config knows no Lua and no bus; services
know no server)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lapps"

#: The layers, bottom first: module-name prefixes (the longest match wins).
LAYERS = [
    ["lapps.schema", "lapps.config_json"],
    ["lapps.acl", "lapps.origin", "lapps.redis_address", "lapps.tls", "lapps.devcert",
     "lapps.deploy.lar", "lapps.deploy.signature", "lapps.deploy.state"],
    ["lapps.config"],
    ["lapps.reload", "lapps.start_order", "lapps.deadline", "lapps.watchdog", "lapps.child_check"],
    ["lapps.metrics", "lapps.logs", "lapps.bus.entries", "lapps.bus.history"],
    ["lapps.fast"],
    ["lapps.protocols"],
    ["lapps.lua"],
    ["lapps.bus"],
    ["lapps.services"],
    ["lapps.admin"],
    ["lapps.deploy"],
    ["lapps.hangup", "lapps.systemd", "lapps.collector"],
    ["lapps.app"],
    ["lapps.workers"],
    ["lapps.tap", "lapps.cli"],
    ["lapps.client"],
]


def _layer(module):
    matches = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
               if module == p or module.startswith(p + ".")]
    return max(matches)[1] if matches else None


def _module_names():
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _imports(path, modules):
    """The lapps modules ``path`` imports (``from a import b``: ``a.b`` when that is a module)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lapps"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                yield name if name in modules else node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("lapps"))


def test_every_module_has_a_layer():
    assert [m for m, _ in _module_names() if m != "lapps" and _layer(m) is None] == []


def test_no_module_imports_from_a_later_layer():
    modules = dict(_module_names())
    upward = [f"{module} -> {target}" for module, path in modules.items() if module != "lapps"
              for target in _imports(path, modules)
              if target != "lapps" and _layer(target) > _layer(module)]
    assert upward == []


def test_the_config_names_the_preloadable_modules_lua_installs():
    from lapps import config
    from lapps.lua.modules import PRELOAD
    assert config.PRELOADABLE == set(PRELOAD)
