"""Dependency rules of `shared/` and `functions/`, checked by parsing the imports with `ast`.

Every import counts: at module level, inside functions and classes, under
`if TYPE_CHECKING:` (a type-only import still couples the code: the importer cannot be read,
checked or moved without the imported module), relative imports, and
`importlib.import_module("...")` / `__import__("...")` of a literal name.

`shared/runtime.py` is the composition root: it builds every service, so rules 2-4 put no
limit on what it imports (it needs no TYPE_CHECKING exemption); rule 1 applies to it too.

The rules:
1. nothing in `shared/` imports the trigger glue: `azure.functions`, `azure.durable_functions`,
   `functions` or `function_app`;
2. `shared/core` and `shared/storage` are the foundation: from `shared` they import only each
   other, `shared.config` and the `shared` package itself; never a flow, `shared.audio`,
   `shared.audit`, `shared.translation`, `shared.agents` or `shared.runtime`;
3. `shared/audio` imports nothing from `shared` outside `shared/audio`;
4. flows import each other only downstream: enrollment may import ingestion; training
   enrollment and ingestion; synthesis enrollment (consent checks) and translation; chat
   agents (the personas); realtime chat, agents and synthesis (a voice turn is a chat turn
   spoken); ingestion, translation, agents and audit import no flow; no flow
   (nor audit) imports `shared.runtime`.
   Every flow may use the foundation, `shared.config`, `shared.audio` and `shared.audit`;
5. in `functions/`, helper modules start with `_` (and define no blueprint); every other module
   defines a module-level blueprint `bp` that `function_app.py` registers exactly once.

Each checker is also run on a small synthetic tree that breaks its rule, so a checker that
stops finding anything fails here too.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TRIGGER_GLUE = ("azure.functions", "azure.durable_functions", "functions", "function_app")

# Rule 2: what the foundation may import from `shared` (units: see `unit_of`).
FOUNDATION = frozenset({"core", "storage"})
FOUNDATION_MAY_IMPORT = frozenset({"core", "storage", "config", "shared"})

# Rule 4: the flow units, and which other flow units each one may import.
FLOW_MAY_IMPORT: dict[str, frozenset[str]] = {
    "ingestion": frozenset(),
    "enrollment": frozenset({"ingestion"}),
    "training": frozenset({"enrollment", "ingestion"}),
    "synthesis": frozenset({"enrollment", "translation"}),
    "translation": frozenset(),
    "agents": frozenset(),
    "chat": frozenset({"agents"}),  # the personas answer
    "realtime": frozenset({"chat", "agents", "synthesis"}),  # voice turns: the agent, the voices
    "audit": frozenset(),  # a service of every flow: it imports none of them
    "retention": frozenset(),  # classifies every flow's data by layout: imports none of them
    # Finds a subject's data in every flow's stores and removes it through their owners.
    "privacy": frozenset({"enrollment", "ingestion", "realtime", "retention", "training"}),
    "alerts": frozenset(),  # reads the rollups every flow records: imports none of them
}
FLOWS = frozenset(FLOW_MAY_IMPORT) - {"audit"}
COMPOSITION_ROOT = "runtime"


# ---- reading the imports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One name a module imports: the module that does, and where."""

    importer: str  # dotted module name, e.g. shared.ingestion.service
    path: str  # relative to the scanned root
    line: int
    target: str  # the imported module (or module.attribute for `from m import attr`)
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        where = " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.path}:{self.line}: {self.importer} imports {self.target}{where}"


def module_name(root: Path, path: Path) -> str:
    """The dotted name of a source file under `root` (a package's __init__ is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _dynamic_target(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in {"import_module", "__import__"} or not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: str) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.path = path
        self.type_only = 0
        self.found: list[Import] = []

    def _add(self, node: ast.AST, target: str) -> None:
        line = getattr(node, "lineno", 0)
        self.found.append(Import(self.module, self.path, line, target, self.type_only > 0))

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self.type_only += 1
        for statement in node.body:
            self.visit(statement)
        self.type_only -= 1
        for statement in node.orelse:  # the runtime branch of `if TYPE_CHECKING: ... else:`
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".") if self.package else []
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        for alias in node.names:
            # `from a import b` may import the module a.b or an attribute of a: keep both
            # readings in one name; `unit_of` and the prefix checks resolve it.
            self._add(node, module if alias.name == "*" else f"{module}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        target = _dynamic_target(node)
        if target is not None:
            self._add(node, target)
        self.generic_visit(node)


def scan(root: Path, package: str) -> list[Import]:
    """Every import of every module of `root/package` (names relative to `root`)."""
    found: list[Import] = []
    for path in sorted((root / package).rglob("*.py")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        visitor = _ImportVisitor(
            module_name(root, path),
            path.name == "__init__.py",
            path.relative_to(root).as_posix(),
        )
        visitor.visit(tree)
        found.extend(visitor.found)
    return found


def is_under(name: str, prefix: str) -> bool:
    """Whether a dotted name is `prefix` or inside it."""
    return name == prefix or name.startswith(prefix + ".")


def unit_of(target: str, root: Path) -> str | None:
    """The part of `shared` a name belongs to (`core`, `ingestion`, `config`, ...).

    `shared` for the package's own attributes (`from shared import __version__`); None for a
    name outside `shared`.
    """
    if not is_under(target, "shared"):
        return None
    parts = target.split(".")
    if len(parts) == 1:
        return "shared"
    first = parts[1]
    if (root / "shared" / first).is_dir() or (root / "shared" / f"{first}.py").is_file():
        return first
    return "shared"


def _report(title: str, violations: Iterable[object]) -> str:
    lines = [str(v) for v in violations]
    return f"{title} ({len(lines)}):\n  " + "\n  ".join(lines)


# ---- the rules -------------------------------------------------------------------------------


def trigger_glue_imports(imports: Iterable[Import]) -> list[Import]:
    """Rule 1: imports of the Functions bindings or the trigger glue."""
    return [i for i in imports if any(is_under(i.target, glue) for glue in TRIGGER_GLUE)]


def foundation_imports(imports: Iterable[Import], root: Path) -> list[Import]:
    """Rule 2: core or storage importing anything of `shared` above them."""
    bad = []
    for i in imports:
        importer = unit_of(i.importer, root)
        target = unit_of(i.target, root)
        if importer in FOUNDATION and target is not None and target not in FOUNDATION_MAY_IMPORT:
            bad.append(i)
    return bad


def audio_imports(imports: Iterable[Import], root: Path) -> list[Import]:
    """Rule 3: shared.audio importing any of `shared` outside shared.audio."""
    return [
        i
        for i in imports
        if unit_of(i.importer, root) == "audio" and unit_of(i.target, root) not in {None, "audio"}
    ]


def flow_imports(imports: Iterable[Import], root: Path) -> list[Import]:
    """Rule 4: a flow importing a flow upstream or beside it, or the composition root."""
    bad = []
    for i in imports:
        importer = unit_of(i.importer, root)
        target = unit_of(i.target, root)
        if importer not in FLOW_MAY_IMPORT or target is None or target == importer:
            continue
        if target == COMPOSITION_ROOT or (
            target in FLOWS and target not in FLOW_MAY_IMPORT[importer]
        ):
            bad.append(i)
    return bad


def _module_level_bp(tree: ast.Module) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value: ast.expr | None = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names, value = [node.target.id], node.value
        else:
            continue
        if "bp" in names and value is not None:
            return value
    return None


def _is_blueprint_call(value: ast.expr) -> bool:
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name.endswith("Blueprint")


def _functions_imports(tree: ast.Module) -> tuple[dict[str, str], dict[str, str]]:
    """Local names of functions modules, and of `bp`s imported from them, in function_app."""
    modules: dict[str, str] = {}  # local name -> functions module
    blueprints: dict[str, str] = {}  # local name of an imported bp -> functions module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "functions":
            for alias in node.names:
                modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and is_under(node.module or "", "functions"):
            module = (node.module or "").split(".", 1)[1]
            for alias in node.names:
                if alias.name == "bp":
                    blueprints[alias.asname or alias.name] = module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_under(alias.name, "functions") and alias.asname:
                    modules[alias.asname] = alias.name.split(".", 1)[-1]
    return modules, blueprints


def _registered_module(
    arg: ast.expr, modules: dict[str, str], blueprints: dict[str, str]
) -> str | None:
    """The functions module whose `bp` this argument of register_functions is."""
    if isinstance(arg, ast.Name):
        return blueprints.get(arg.id)
    if not (isinstance(arg, ast.Attribute) and arg.attr == "bp"):
        return None
    owner = arg.value
    if isinstance(owner, ast.Name):
        return modules.get(owner.id)
    if (
        isinstance(owner, ast.Attribute)
        and isinstance(owner.value, ast.Name)
        and owner.value.id == "functions"
    ):
        return owner.attr
    return None


def registered_blueprints(app: Path) -> Counter[str]:
    """How many times function_app.py registers each functions module's `bp`."""
    tree = ast.parse(app.read_text(encoding="utf-8"), filename=str(app))
    modules, blueprints = _functions_imports(tree)
    registered: Counter[str] = Counter()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"register_functions", "register_blueprint"}
        ):
            for arg in node.args:
                module = _registered_module(arg, modules, blueprints)
                if module is not None:
                    registered[module] += 1
    return registered


def _functions_modules(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted((root / "functions").iterdir()):
        if path.is_file() and path.suffix == ".py" and path.name != "__init__.py":
            yield path.stem, path
        elif path.is_dir() and (path / "__init__.py").is_file():
            yield path.name, path / "__init__.py"


def blueprint_problems(root: Path) -> list[str]:
    """Rule 5: helpers named `_x`, blueprints `bp` each registered once in function_app.py."""
    registered = registered_blueprints(root / "function_app.py")
    problems = []
    for name, path in _functions_modules(root):
        where = path.relative_to(root).as_posix()
        value = _module_level_bp(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        if name.startswith("_"):
            if value is not None:
                problems.append(f"{where}: a helper (underscore) module defines a blueprint bp")
            continue
        if value is None:
            problems.append(
                f"{where}: defines no module-level blueprint `bp` "
                f"(a helper module's name starts with `_`)"
            )
        elif not _is_blueprint_call(value):
            problems.append(f"{where}: `bp` is not a Blueprint(...)")
        if registered[name] != 1:
            problems.append(
                f"{where}: function_app.py registers functions.{name}.bp "
                f"{registered[name]} times, not once"
            )
    known = {name for name, _ in _functions_modules(root)}
    for name in sorted(set(registered) - known):
        problems.append(f"function_app.py: registers functions.{name}.bp, which does not exist")
    return problems


# ---- the rules on this repository ------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_imports() -> list[Import]:
    imports = scan(REPO, "shared")
    assert len({i.importer for i in imports}) > 20, "the scan found too few modules"
    return imports


def test_shared_never_imports_the_trigger_glue(shared_imports: list[Import]) -> None:
    bad = trigger_glue_imports(shared_imports)
    assert not bad, _report("shared/ imports the Functions bindings or trigger glue", bad)


def test_core_and_storage_import_no_flow(shared_imports: list[Import]) -> None:
    bad = foundation_imports(shared_imports, REPO)
    assert not bad, _report(
        "shared/core and shared/storage may import only core, storage, shared.config", bad
    )


def test_audio_imports_nothing_else_of_shared(shared_imports: list[Import]) -> None:
    bad = audio_imports(shared_imports, REPO)
    assert not bad, _report("shared/audio imports shared outside shared/audio", bad)


def test_flows_import_each_other_only_downstream(shared_imports: list[Import]) -> None:
    bad = flow_imports(shared_imports, REPO)
    allowed = "; ".join(f"{k} -> {sorted(v)}" for k, v in FLOW_MAY_IMPORT.items())
    assert not bad, _report(
        f"flows import a flow they may not, or shared.runtime (allowed: {allowed})", bad
    )


def test_functions_helpers_are_private_and_blueprints_registered() -> None:
    problems = blueprint_problems(REPO)
    assert not problems, _report("functions/ layout", problems)


def test_every_flow_and_the_foundation_exist() -> None:
    """The rules name real packages: a rename must update them, not silently empty a rule."""
    named = FOUNDATION | FOUNDATION_MAY_IMPORT | set(FLOW_MAY_IMPORT) | {COMPOSITION_ROOT, "audio"}
    missing = sorted(n for n in named - {"shared"} if unit_of(f"shared.{n}", REPO) != n)
    assert not missing, f"the rules name parts of shared/ that do not exist: {missing}"


# ---- each checker, on a tree that breaks its rule --------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> source) under `root`, with package __init__ files."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        for parent in path.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent != Path() and not init.exists():
                init.write_text("", encoding="utf-8")
    return root


def _targets(found: Iterable[Import]) -> set[tuple[str, str]]:
    return {(i.importer, i.target) for i in found}


def test_the_scan_sees_every_kind_of_import(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "shared/core/a.py": (
                "from __future__ import annotations\n"
                "import importlib\n"
                "from typing import TYPE_CHECKING\n"
                "import shared.x as x\n"
                "if TYPE_CHECKING:\n"
                "    from shared.y import Y\n"
                "else:\n"
                "    from shared.z import Z\n"
                "def f() -> None:\n"
                "    from . import b\n"
                "    from ..storage.c import C\n"
                "    importlib.import_module('shared.dyn')\n"
                "class K:\n"
                "    import shared.in_class\n"
            ),
            "shared/core/b.py": "",
            "shared/storage/c.py": "",
        },
    )
    found = scan(root, "shared")
    assert _targets(found) >= {
        ("shared.core.a", "shared.x"),
        ("shared.core.a", "shared.y.Y"),
        ("shared.core.a", "shared.z.Z"),
        ("shared.core.a", "shared.core.b"),
        ("shared.core.a", "shared.storage.c.C"),
        ("shared.core.a", "shared.dyn"),
        ("shared.core.a", "shared.in_class"),
    }
    type_only = {i.target for i in found if i.type_only}
    assert type_only == {"shared.y.Y"}
    assert all(i.path == "shared/core/a.py" for i in found)


def test_rule_1_checker_finds_trigger_glue(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "shared/a.py": "import azure.functions as func\n",
            "shared/b.py": "from azure import durable_functions\n",
            "shared/c.py": "def f():\n    from functions._http import Call\n",
            "shared/d.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import function_app\n"
            ),
            "shared/ok.py": (
                "import azure.functions_worker_like\nimport functionsx\nimport azure.storage.blob\n"
            ),
        },
    )
    bad = trigger_glue_imports(scan(root, "shared"))
    assert {i.importer for i in bad} == {"shared.a", "shared.b", "shared.c", "shared.d"}


def test_rule_2_checker_finds_the_foundation_importing_upward(tmp_path: Path) -> None:
    files = {
        f"shared/{unit}/__init__.py": ""
        for unit in ("core", "storage", "audio", "ingestion", "synthesis")
    }
    files |= {
        "shared/__init__.py": "__version__ = '1'\n",
        "shared/config.py": "",
        "shared/runtime.py": "",
        "shared/audit.py": "",
        "shared/translation.py": "",
        "shared/core/a.py": (
            "from shared import __version__\n"  # allowed: the package itself
            "from shared.config import Settings\n"  # allowed
            "from shared.storage import blobs\n"  # allowed
            "from shared.ingestion.service import S\n"
        ),
        "shared/storage/b.py": (
            "from typing import TYPE_CHECKING\n"
            "from shared.core import a\n"  # allowed
            "if TYPE_CHECKING:\n"
            "    from shared.audit import AuditLog\n"
            "def f():\n"
            "    from shared import runtime\n"
            "    from shared.audio.model import M\n"
            "    import shared.translation\n"
        ),
        "shared/synthesis/c.py": "from shared.runtime import Runtime\n",  # not rule 2's business
    }
    root = write_tree(tmp_path, files)
    bad = foundation_imports(scan(root, "shared"), root)
    assert _targets(bad) == {
        ("shared.core.a", "shared.ingestion.service.S"),
        ("shared.storage.b", "shared.audit.AuditLog"),
        ("shared.storage.b", "shared.runtime"),
        ("shared.storage.b", "shared.audio.model.M"),
        ("shared.storage.b", "shared.translation"),
    }


def test_rule_3_checker_finds_audio_importing_the_rest_of_shared(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "shared/config.py": "",
            "shared/core/errors.py": "",
            "shared/audio/a.py": (
                "import numpy\n"
                "from shared.audio import b\n"
                "from . import b as again\n"
                "from shared.core.errors import E\n"
                "def f():\n"
                "    from .. import config\n"
            ),
            "shared/audio/b.py": "",
        },
    )
    bad = audio_imports(scan(root, "shared"), root)
    assert _targets(bad) == {
        ("shared.audio.a", "shared.core.errors.E"),
        ("shared.audio.a", "shared.config"),
    }


def test_rule_4_checker_finds_flows_importing_upstream(tmp_path: Path) -> None:
    flows = ("ingestion", "enrollment", "training", "synthesis", "core", "audio")
    files = {f"shared/{unit}/__init__.py": "" for unit in flows}
    files |= {
        "shared/runtime.py": "",
        "shared/audit.py": "from shared.synthesis import s\n",  # audit imports no flow
        "shared/translation.py": "from shared.enrollment import e\n",
        "shared/agents.py": "from shared.audio import a\n",  # allowed
        "shared/ingestion/i.py": (
            "from shared.audio import a\n"  # allowed
            "from shared.audit import AuditLog\n"  # allowed
            "from shared.enrollment import e\n"
        ),
        "shared/enrollment/e.py": (
            "from shared.ingestion import i\n"  # allowed
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from shared.training import t\n"
        ),
        "shared/training/t.py": (
            "from shared.enrollment import e\n"  # allowed
            "from shared.ingestion import i\n"  # allowed
            "from shared.synthesis import s\n"
        ),
        "shared/synthesis/s.py": (
            "from shared.enrollment import e\n"  # allowed
            "from shared.translation import T\n"  # allowed
            "from shared.training import t\n"
            "from shared.ingestion import i\n"
            "def f():\n"
            "    from shared.runtime import runtime\n"
        ),
    }
    root = write_tree(tmp_path, files)
    bad = flow_imports(scan(root, "shared"), root)
    assert _targets(bad) == {
        ("shared.audit", "shared.synthesis.s"),
        ("shared.translation", "shared.enrollment.e"),
        ("shared.ingestion.i", "shared.enrollment.e"),
        ("shared.enrollment.e", "shared.training.t"),
        ("shared.training.t", "shared.synthesis.s"),
        ("shared.synthesis.s", "shared.training.t"),
        ("shared.synthesis.s", "shared.ingestion.i"),
        ("shared.synthesis.s", "shared.runtime.runtime"),
    }


def test_rule_5_checker_finds_unregistered_blueprints_and_public_helpers(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "functions/_http.py": "def endpoint(): ...\n",
            "functions/_leaky.py": "import azure.functions as func\nbp = func.Blueprint()\n",
            "functions/good.py": "import azure.functions as func\nbp = func.Blueprint()\n",
            "functions/aliased.py": "import azure.durable_functions as df\nbp = df.Blueprint()\n",
            "functions/helper.py": "def util(): ...\n",
            "functions/forgotten.py": "import azure.functions as func\nbp = func.Blueprint()\n",
            "functions/twice.py": "import azure.functions as func\nbp = func.Blueprint()\n",
            "functions/odd.py": "bp = object()\n",
            "function_app.py": (
                "import azure.durable_functions as df\n"
                "from functions import good, twice, odd\n"
                "from functions import aliased as renamed, gone\n"
                "app = df.DFApp()\n"
                "app.register_functions(good.bp)\n"
                "app.register_functions(renamed.bp)\n"
                "app.register_functions(twice.bp)\n"
                "app.register_functions(twice.bp)\n"
                "app.register_functions(odd.bp)\n"
                "app.register_functions(gone.bp)\n"
            ),
        },
    )
    problems = blueprint_problems(root)
    assert problems == [
        "functions/_leaky.py: a helper (underscore) module defines a blueprint bp",
        "functions/forgotten.py: function_app.py registers functions.forgotten.bp 0 times, "
        "not once",
        "functions/helper.py: defines no module-level blueprint `bp` "
        "(a helper module's name starts with `_`)",
        "functions/helper.py: function_app.py registers functions.helper.bp 0 times, not once",
        "functions/odd.py: `bp` is not a Blueprint(...)",
        "functions/twice.py: function_app.py registers functions.twice.bp 2 times, not once",
        "function_app.py: registers functions.gone.bp, which does not exist",
    ]
