"""The modules of the click's and the postback's paths that the build compiles to C with mypyc
(setup.py), and whether the running ones are.

Two thirds of a click's CPU is the interpreter running our Python, spread over dozens of small steps
(BENCHMARKS.md, "Where the CPU goes, by perf"); compiled, the same code costs about a fifth less CPU
per click in one process (scripts/cpu_in_process.py) and answers 16% (SQLite) to 23% (PostgreSQL)
more clicks a second under wrk (BENCHMARKS.md, "The click path compiled with mypyc"). The sources
stay plain, type-checked Python: a build without a C compiler, or with CLICKTRAIL_COMPILE=0, runs
them as they are.

This module is read by setup.py as a plain file (no import of the package), so it imports nothing of
clicktrail's.
"""

import importlib.machinery
import importlib.util
import os
from pathlib import Path

COMPILED_MODULES = (
    "clicktrail.ids",
    "clicktrail.macros",
    "clicktrail.money",
    "clicktrail.text",
    "clicktrail.types",
    "clicktrail.clicks.request",
    "clicktrail.clicks.intake",
    "clicktrail.clicks.enrichment.agents",
    "clicktrail.clicks.enrichment.bots",
    "clicktrail.clicks.enrichment.enricher",
    "clicktrail.clicks.enrichment.geo",
    "clicktrail.clicks.enrichment.uniqueness",
    "clicktrail.conversions.auth",
    "clicktrail.conversions.decision",
    "clicktrail.conversions.intake",
    "clicktrail.conversions.request",
    "clicktrail.storage.inserts",
    "clicktrail.storage.shared_table",
    "clicktrail.web.asgi",
    "clicktrail.web.edge",
    "clicktrail.web.protocol",
)
"""Chosen by profile: what a click and a postback run, short of SQLAlchemy's rows (event_store.py)."""


def source_paths(root: Path) -> list[Path]:
    """The modules' source files under `root` (the directory holding the `clicktrail` package)."""
    return [root.joinpath(*name.split(".")).with_suffix(".py") for name in COMPILED_MODULES]


def _extension_files() -> dict[str, Path]:
    """The modules this interpreter would load compiled, each with its extension file."""
    found = {}
    for name in COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            found[name] = Path(spec.origin)
    return found


def loaded_compiled() -> list[str]:
    """Which of the modules this interpreter would load compiled (an extension module, not source)."""
    return list(_extension_files())


def stale_compiled() -> list[str]:
    """Compiled modules whose source changed after they were built: in a checkout installed in place
    (`make install`), the extension sits beside its source and is loaded instead of it, so an edit
    would silently not run until the next build (`make compile`)."""
    stale = []
    for name, built in _extension_files().items():
        source = built.with_name(built.name.split(".", 1)[0] + ".py")
        if source.exists() and os.stat(source).st_mtime > os.stat(built).st_mtime:
            stale.append(name)
    return stale


def state() -> str:
    """How the click and postback paths run here, in a few words: `clicktrail serve`'s first line,
    `make bench`'s table and `make compile` say it the same way."""
    compiled = loaded_compiled()
    if len(compiled) == len(COMPILED_MODULES):
        return f"click and postback paths compiled, {len(compiled)} modules"
    if not compiled:
        return "not compiled: pure Python, slower"
    return "compiled but for " + ", ".join(sorted(set(COMPILED_MODULES) - set(compiled)))


if __name__ == "__main__":  # the Makefile's list of what to compile again after an edit
    print(*(path.relative_to(Path.cwd()) for path in source_paths(Path("src").resolve())))
