"""The package's shape: one room per stage, data flowing one way, commands thin at the top.

Reads every module of `dpo_jax` as text (ast, nothing imported), collects every import it makes (at
module level or inside a function), and checks that
  - no two modules import each other, directly or through others (no cycles);
  - a room imports only from rooms earlier in the flow (`ROOMS`), never from a later one;
  - library code never imports a command, the `configs/` directory, or the synthetic experiment;
  - the top level of the package holds only commands, each of them short.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_jax"

# The rooms in the order data flows; a room may import from itself and from rooms before it.
ROOMS = (
    "assets",
    "metrics",
    "data",
    "models",
    "config",
    "objectives",
    "sharding",
    "sampling",
    "checkpoint",
    "run",  # the run infrastructure every stage uses: scaffold, step loop, state, optimizer
    "judges",
    "evaluation",
    "analysis",
    "training",
    "ppo",
    "perf",
    "synthetic",
    "recipes",
)
COMMANDS_ROOM = "commands"  # the modules at the top level of dpo_jax/
MAX_COMMAND_LINES = 150


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = all_modules()


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
        return COMMANDS_ROOM
    return parts[1]


def imported_modules(path: Path) -> set[str]:
    """The dpo_jax modules (and `configs...`) that `path` imports anywhere in its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from dpo_jax.data import loader` imports a submodule; `from dpo_jax.data import X`
                # imports a name from the package itself.
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {name for name in found if name.split(".")[0] in ("dpo_jax", "configs")}


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def test_every_room_is_known_and_the_top_level_holds_only_commands():
    rooms = {room_of(name) for name in MODULES} - {"package", COMMANDS_ROOM}
    assert rooms == set(ROOMS), f"rooms on disk {sorted(rooms)} != the flow's rooms {sorted(ROOMS)}"
    commands = sorted(name for name in MODULES if room_of(name) == COMMANDS_ROOM)
    assert {"dpo_jax.main", "dpo_jax.sample", "dpo_jax.bench"} <= set(commands)
    for name in commands:
        lines = len(MODULES[name].read_text().splitlines())
        assert lines <= MAX_COMMAND_LINES, f"{name} has {lines} lines: a command should be thin"


def test_no_import_cycles():
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in MODULES:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in GRAPH.get(node, ()):
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_one_way(module):
    room = room_of(module)
    for target in sorted(GRAPH[module]):
        assert not target.startswith("configs"), (
            f"{module} imports {target}: library code never imports configs/"
        )
        target_room = room_of(target)
        if room == COMMANDS_ROOM or target_room in ("package", room):
            continue
        assert target_room != COMMANDS_ROOM, f"{module} imports the command {target}"
        assert ROOMS.index(target_room) < ROOMS.index(room), (
            f"{module} ({room}) imports {target} ({target_room}), a room later in the flow {ROOMS}"
        )


# Stages that are siblings, not layers: each imports the run infrastructure (`run`), never the other's
# modules, so a change to one stage's loop cannot silently change another's.
SIBLING_STAGES = {"ppo": "training"}


@pytest.mark.parametrize("room,sibling", sorted(SIBLING_STAGES.items()))
def test_a_stage_imports_the_run_infrastructure_not_a_sibling_stage(room, sibling):
    offending = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if room_of(module) == room
        for target in targets
        if room_of(target) == sibling
    )
    assert not offending, f"{room} imports the {sibling} stage's modules (use dpo_jax.run): {offending}"


def test_the_checker_sees_a_backwards_arrow_and_a_cycle(tmp_path):
    """The checks above can fail: a planted backwards import and a planted cycle are found."""
    assert room_of("dpo_jax.training.loop") == "training"
    assert room_of("dpo_jax.main") == COMMANDS_ROOM
    planted = {"dpo_jax.a": {"dpo_jax.b"}, "dpo_jax.b": {"dpo_jax.a"}}
    saved = dict(GRAPH)
    try:
        GRAPH.update(planted)
        MODULES.update({"dpo_jax.a": tmp_path / "a.py", "dpo_jax.b": tmp_path / "b.py"})
        with pytest.raises(AssertionError, match="import cycles"):
            test_no_import_cycles()
        GRAPH["dpo_jax.models.layers"] = GRAPH["dpo_jax.models.layers"] | {"dpo_jax.training.step"}
        with pytest.raises(AssertionError, match="a room later in the flow"):
            test_imports_flow_one_way("dpo_jax.models.layers")
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
        MODULES.pop("dpo_jax.a")
        MODULES.pop("dpo_jax.b")


def private_imports(path: Path) -> list[str]:
    """`module._name` for every private name `path` imports from another dpo_jax module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dpo_jax"):
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_")]
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_names(module):
    """A name another room (or module) needs is public: a `_name` is its module's own business."""
    assert not private_imports(MODULES[module]), (
        f"{module} imports private names {private_imports(MODULES[module])}"
    )


# The program builders: every jitted program of a stage (train, eval, reference pass; PPO's rollout,
# targets and update) is built by `training.programs` / `ppo.programs` from these jit helpers, so the
# loop, PPO, bench and aot cannot disagree on how a program is traced (inside the mesh's rules).
PROGRAM_BUILDERS = {
    "dpo_jax.training.step": "jit_train_step, which training.programs calls",
    "dpo_jax.evaluation.passes": "jit_eval_step / jit_reference_logps_step, which training.programs calls",
    "dpo_jax.ppo.step": "jit_ppo_update, which ppo.programs calls",
    "dpo_jax.ppo.programs": "PPO's builder",
}
# jax.jit elsewhere, each for something that is not a stage's program:
JIT_ELSEWHERE = {
    "dpo_jax.sharding.mesh": "sharded initialisation of a state (out_shardings only, no model code)",
    "dpo_jax.run.state": "the optimizer state's init and the reference's dtype cast, on the mesh",
    "dpo_jax.models.loading": "a random model's init as one program instead of op by op",
    "dpo_jax.sampling.sharded": "the sampler on the mesh (traced in its rules), its own room's program",
    "dpo_jax.sampling.generate": "the sampler, its own room's program (PPO's rollout wraps it in ppo.programs)",
    "dpo_jax.judges.scoring": "the one scoring program (judges, PPO's reward model, aot), traced in its rules",
    "dpo_jax.analysis.teacher_forcing": "scoring saved samples after training (an analysis, no train state)",
    "dpo_jax.synthetic.exact": "the synthetic task's exact log-probs over every completion (an analysis)",
    "dpo_jax.synthetic.tables": "the synthetic task's probability tables (an analysis)",
    "dpo_jax.synthetic.controls": "the tabular policy's and the population loss's minimisers (an analysis, no model)",
    "dpo_jax.synthetic.rlhf": "the learned reward model's table over every completion (an analysis)",
}


def jit_uses(path: Path) -> int:
    """How often `path` names `jax.jit` (calls, decorators, functools.partial(jax.jit, ...))."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "jit"
        and isinstance(node.value, ast.Name)
        and node.value.id == "jax"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_programs_are_jitted_by_the_builders(module):
    if module in PROGRAM_BUILDERS or module in JIT_ELSEWHERE:
        return
    assert jit_uses(MODULES[module]) == 0, (
        f"{module} jits a program outside the program builders {sorted(PROGRAM_BUILDERS)}: build it "
        "there (traced inside the mesh's rules), or add the module to JIT_ELSEWHERE saying why it is "
        "not a stage's program"
    )


def test_the_allow_lists_name_modules_that_jit(tmp_path):
    """No stale entry, and the two checks above can fail."""
    for module in {**PROGRAM_BUILDERS, **JIT_ELSEWHERE}:
        assert jit_uses(MODULES[module]) > 0, f"{module} no longer jits: drop it from the allow-list"
    planted = tmp_path / "planted.py"
    planted.write_text("import jax\nfrom dpo_jax.training.loop import _secret\nstep = jax.jit(lambda x: x)\n")
    assert private_imports(planted) == ["dpo_jax.training.loop._secret"]
    assert jit_uses(planted) == 1
    MODULES["dpo_jax.training.planted"] = planted
    try:
        with pytest.raises(AssertionError, match="jits a program outside the program builders"):
            test_programs_are_jitted_by_the_builders("dpo_jax.training.planted")
        with pytest.raises(AssertionError, match="imports private names"):
            test_no_module_imports_another_modules_private_names("dpo_jax.training.planted")
    finally:
        MODULES.pop("dpo_jax.training.planted")


# The one command-line stack (issue 30 item 5): every command declares its flags as a table and parses
# them with `config.command_line.parse_command`; nothing else defines a flag, parses argv, runs
# `absl.app` or spells the RESULT prefix, so flags, errors, `--help` and RESULT lines cannot drift apart.
COMMAND_LINE = "dpo_jax.config.command_line"


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def command_line_uses(path: Path) -> list[str]:
    """What `path` does that belongs to the command-line stack alone (docstrings and comments aside)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom) and node.module == "absl":
                names = [f"absl.{alias.name}" for alias in node.names]
            found += [f"imports {n}" for n in names if n.split(".")[0] == "argparse" or n == "absl.app"]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("DEFINE"):
            found.append(f"defines a flag ({node.attr})")
        elif (
            isinstance(node, ast.Attribute) and node.attr == "argv" and getattr(node.value, "id", "") == "sys"
        ):
            found.append("reads sys.argv")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if "RESULT " in node.value:
                found.append(f"spells the RESULT prefix ({node.value[:30]!r})")
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_one_command_line_stack(module):
    if module == COMMAND_LINE:
        return
    assert not command_line_uses(MODULES[module]), (
        f"{module} {command_line_uses(MODULES[module])}: declare flags as a table and parse them with "
        f"{COMMAND_LINE}.parse_command; print results with print_result / result_line"
    )


# Modules run with `python -m` that take no flags at all (nothing to parse):
RUNNABLE_WITHOUT_FLAGS = {
    "dpo_jax.assets.make_tiny_tokenizer": "writes the shipped tokenizer; the assets room precedes config",
}


def runs_as_a_command(module: str) -> bool:
    return room_of(module) == COMMANDS_ROOM or 'if __name__ == "__main__":' in MODULES[module].read_text()


@pytest.mark.parametrize("module", sorted(name for name in MODULES if runs_as_a_command(name)))
def test_every_command_parses_its_table_with_the_stack(module):
    text = MODULES[module].read_text()
    if module in RUNNABLE_WITHOUT_FLAGS:
        assert "argv" not in text, f"{module} reads arguments: give it a FLAGS table and parse_command"
        return
    assert "parse_command(" in text and "FLAGS = (" in text, f"{module}: a FLAGS table read by parse_command"


def test_the_stack_check_sees_each_thing_it_forbids(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        '"""A docstring may say RESULT {json}."""\n'
        "import argparse\nimport sys\nfrom absl import app, flags\nfrom ml_collections import config_flags\n"
        "flags.DEFINE_string('x', '', '')\nconfig_flags.DEFINE_config_file('config')\n"
        "argv = sys.argv[1:]\nprint('RESULT ' + '{}')\nprint(f'RESULT {argv}')\n"
    )
    assert command_line_uses(planted) == [
        "imports argparse", "imports absl.app", "defines a flag (DEFINE_string)",
        "defines a flag (DEFINE_config_file)", "reads sys.argv", "spells the RESULT prefix ('RESULT ')",
        "spells the RESULT prefix ('RESULT ')",
    ]  # fmt: skip
    assert command_line_uses(MODULES[COMMAND_LINE])  # the stack itself does all of it


def test_the_long_files_the_workers_start_first_exist():
    from tests.conftest import LONG_FILES

    root = Path(__file__).resolve().parents[1]
    assert [f for f in LONG_FILES if not (root / f).is_file()] == []
