"""The app never imports the local Stripe emulator: it talks to it over HTTP only, as
to Stripe, so that nothing the app does in production can depend on the emulator
(a separate distribution, stripe_emulator/pyproject.toml, a development tool).

Checked two ways: statically, no module of the app's packages names
`stripe_emulator` in an import or a string (importlib by name); and at run time,
Django set up with every app module imported leaves `stripe_emulator` out of
sys.modules (a fresh interpreter, so the test run's own plugin does not count).
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_PACKAGES = ("billing", "embedded_meter", "epsilon", "ops")


def _app_modules():
    for package in APP_PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _names_the_emulator(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        else:
            continue
        for name in names:
            if name == "stripe_emulator" or name.startswith("stripe_emulator."):
                yield node.lineno, name


def test_no_app_module_names_the_emulator():
    files = list(_app_modules())
    assert len(files) > 20  # the packages are where this test looks
    offenders = [f"{path.relative_to(ROOT)}:{line}: {name}"
                 for path in files
                 for line, name in _names_the_emulator(ast.parse(path.read_text(), str(path)))]
    assert offenders == []


def test_the_checker_sees_imports_and_importlib_names():
    code = "import stripe_emulator\nfrom stripe_emulator.faults import X\nimportlib.import_module('stripe_emulator.app')\n"
    assert [name for _, name in _names_the_emulator(ast.parse(code))] == [
        "stripe_emulator", "stripe_emulator.faults", "stripe_emulator.app"]


def test_importing_the_whole_app_loads_no_emulator_module():
    script = f"""
import importlib, os, pkgutil, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "epsilon.settings")
import django
django.setup()
for package in {APP_PACKAGES!r}:
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if ".migrations." in info.name:
            continue
        importlib.import_module(info.name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "stripe_emulator")
print(len([m for m in sys.modules if m.split(".")[0] in {APP_PACKAGES!r}]), loaded)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) > 20
    assert loaded.strip() == "[]"
