"""The embedded meter stands on its own: billing loads it, it never imports billing."""

import ast
from pathlib import Path

import embedded_meter

PACKAGE = Path(embedded_meter.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports (relative imports stay inside the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return names


def test_no_module_of_the_embedded_meter_imports_billing():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10  # the scan sees the package, migrations included
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported_modules(path) if n.split(".")[0] == "billing")
        for path in sources
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_scan_would_catch_an_import_of_billing(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import billing.models\nfrom billing.usage_sources.base import UsageRequest\n"
        "def f():\n    import importlib\n    importlib.import_module('billing.conf')\n"
    )
    assert {"billing.models", "billing.usage_sources.base", "billing.conf"} <= imported_modules(module)
