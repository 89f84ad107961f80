"""Builds clicktrail, compiling the click's and the postback's modules to C with mypyc
(src/clicktrail/compiled.py says which and why). Everything else about the package is in pyproject.toml.

CLICKTRAIL_COMPILE=0 builds pure Python. Without mypy at build time, or when the C compiler fails,
the build warns and goes on pure: the same code, only slower. mypyc type-checks the modules with
their imports, so the build needs clicktrail's dependencies installed beside it: `make install`
builds with `pip install --no-build-isolation` after installing them.
"""

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SOURCES = ROOT / "src"


def _warn(message: str) -> None:
    print(f"clicktrail: {message}; building pure Python (slower, same behaviour)", file=sys.stderr)


def _remove_built_in_place() -> None:
    """A checkout installed in place keeps its extensions beside the sources, and Python loads an
    extension before a source: a build that ends pure must not leave an earlier build's running
    instead of the code as it is now."""
    for built in [*SOURCES.glob("clicktrail_compiled__mypyc.*"), *SOURCES.glob("clicktrail/**/*.so")]:
        built.unlink()


class OptionalBuildExt(build_ext):
    """A failed compilation leaves the package pure Python instead of failing the install. All or
    nothing: each module's extension loads the group's shared library, so none is kept when any
    part failed."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # whatever the compiler's failure, the answer is no extension
            for extension in self.extensions:
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            _remove_built_in_place()
            _warn(f"could not compile ({exc})")


def _extensions() -> list[Any]:
    if os.environ.get("CLICKTRAIL_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc (part of mypy) is not installed")
        return []
    compiled = runpy.run_path(str(SOURCES / "clicktrail" / "compiled.py"))
    paths = [str(path.relative_to(ROOT)) for path in compiled["source_paths"](SOURCES)]
    try:
        extensions: list[Any] = mypycify(paths, opt_level="3", group_name="clicktrail_compiled")
    except (Exception, SystemExit) as exc:  # mypy's type errors end in SystemExit
        _warn(f"mypyc could not compile the modules ({exc})")
        return []
    return extensions


EXTENSIONS = _extensions()
if not EXTENSIONS:
    _remove_built_in_place()
setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": OptionalBuildExt})
