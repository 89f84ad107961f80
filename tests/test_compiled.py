"""The click path runs compiled where it can be, and the package still installs where it cannot."""

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from clicktrail.compiled import COMPILED_MODULES, loaded_compiled, source_paths, state

ROOT = Path(__file__).resolve().parent.parent


def test_the_suite_runs_the_click_path_compiled() -> None:
    """`make install` compiles it, so the tests exercise the code the benchmark measures. Only a
    machine without a C compiler, or a build asked to stay pure, runs it as Python."""
    if os.environ.get("CLICKTRAIL_COMPILE") == "0" or (not os.environ.get("CI") and not shutil.which("cc")):
        pytest.skip("built without compiling (CLICKTRAIL_COMPILE=0 or no C compiler)")
    assert loaded_compiled() == list(COMPILED_MODULES), state()


def test_a_build_whose_compiler_fails_installs_pure_python(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    # One small module to compile instead of all: mypyc type-checks and translates every listed module
    # before the C compiler runs and fails, 2.5 minutes of the suite for the whole list on a slow
    # machine (2026-12-07), and the fallback taken is the same.
    compiled_py = source / "src" / "clicktrail" / "compiled.py"
    listed = compiled_py.read_text()
    narrowed = re.sub(
        r"COMPILED_MODULES = \(.*?\n\)", 'COMPILED_MODULES = ("clicktrail.text",)', listed, flags=re.S
    )
    assert narrowed != listed
    compiled_py.write_text(narrowed)
    wheel_dir = tmp_path / "wheels"
    pip_wheel = ["pip", "wheel", "--verbose", "--no-build-isolation", "--no-deps", "--wheel-dir"]
    built = subprocess.run(
        [sys.executable, "-m", *pip_wheel, str(wheel_dir), str(source)],
        env={**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = built.stdout + built.stderr  # pip shows the build's own messages only when verbose
    assert built.returncode == 0, output
    assert "could not compile" in output
    assert "building pure Python" in output
    (wheel,) = wheel_dir.glob("clicktrail-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "clicktrail/web/edge.py" in names
    assert not [name for name in names if name.endswith(".so")]


def test_no_compiled_function_names_two_kinds_of_exception_alike() -> None:
    """mypy lets `except A as exc` and `except B as exc` share a name in one function; mypyc gives the
    name the first one's type, so catching the second raises TypeError instead (a malformed postback
    answered 500 before this test). Each kind gets its own name in the compiled modules."""
    reused = []
    for path in source_paths(ROOT / "src"):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            kinds: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    kinds.setdefault(node.name, set()).add(ast.unparse(node.type))
            reused += [f"{path.name}: {function.name}: {name}" for name, of in kinds.items() if len(of) > 1]
    assert not reused
