"""Start-up: what ``import dtn_bench`` and the command line's help import, the timm zoo, Ctrl-C while starting, and
user text printed as given (never read as rich markup).

The import checks run in fresh interpreters: this test process has long imported torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision", "numba", "pandas", "matplotlib", "dtn_bench.models", "dtn_bench.norms")


def _python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _last_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------------
# what start-up imports
_EVERY_HELP = """
import contextlib, io, json, sys
from dtn_bench.cli.app import app, main
import typer.main

heavy = sys.argv[1].split(",")
loaded = lambda: sorted(m for m in heavy if m in sys.modules)
seen = {"import dtn_bench.cli.app": loaded()}

def call(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code in (0, None), (argv, e.code)
    assert out.getvalue().strip(), argv
    seen[" ".join(argv)] = loaded()

def walk(cmd, path):
    call([*path, "--help"])
    if hasattr(cmd, "list_commands"):  # a group: every command, the table commands of the suites included
        ctx = cmd.make_context("dtn-bench", [], resilient_parsing=True)
        for name in cmd.list_commands(ctx):
            walk(cmd.get_command(ctx, name), [*path, name])

call(["--version"])
walk(typer.main.get_command(app), [])
print(json.dumps(seen))
"""


def test_help_and_version_of_every_command_import_no_torch():
    """`dtn-bench --help`, `--version` and every command's `--help` (the table commands of every suite included)
    import neither torch nor timm, the model zoo or the normalisers."""
    seen = _last_json(_python(_EVERY_HELP, ",".join(HEAVY)))
    assert {"--help", "--version", "lra listops --help", "table listops --help", "table imagenet-c --help",
            "bench norms --help"} <= set(seen)
    assert {argv: mods for argv, mods in seen.items() if mods} == {}


def test_table_help_shows_what_the_suite_declares():
    """The table commands come from the index without importing a suite, but say what the suite declares."""
    proc = _python("from dtn_bench.cli.app import main; main(['table', 'listops', '--help'])")
    assert proc.returncode == 0, proc.stderr
    assert "--ci" in proc.stdout and "ListOps: rows Transformer" in proc.stdout


def test_the_table_index_is_the_suites_declarations():
    """dtn_bench/cli/table_commands.json holds each built-in suite's table command, help and options (rewrite it
    with `python -m dtn_bench.cli.table` after changing them)."""
    from dtn_bench.cli.table import TABLE_INDEX, _declaration
    from dtn_bench.suites import SUITE_MODULES, all_suites

    declared = {s.command: _declaration(s) for s in all_suites()
                if s.name in SUITE_MODULES and s.report is not None and s.command}
    assert json.loads(TABLE_INDEX.read_text(encoding="utf-8")) == declared, \
        "dtn_bench/cli/table_commands.json is stale: run python -m dtn_bench.cli.table"


_IMPORT = """
import json, sys
import dtn_bench
heavy = sys.argv[1].split(",")
before = sorted(m for m in heavy if m in sys.modules)
from dtn_bench.norms.dtn import DTN
from dtn_bench.norms import build_norm
lazy = dtn_bench.DTN is DTN and dtn_bench.build_norm is build_norm and dtn_bench.models.MODELS is not None
print(json.dumps({"before": before, "lazy": lazy, "dir": "DTN" in dir(dtn_bench)}))
"""


def test_import_dtn_bench_is_light_and_its_attributes_are_lazy():
    got = _last_json(_python(_IMPORT, ",".join(HEAVY)))
    assert got == {"before": [], "lazy": True, "dir": True}


_ZOO = """
import json, sys
order = sys.argv[1]
if order == "dtn_bench first":
    import dtn_bench
    import timm
else:
    import timm
    import dtn_bench
hooks = [f for f in sys.meta_path if getattr(f, "dtn_bench_zoo_hook", False)]
model = timm.create_model("vit_t_dtn")
print(json.dumps({"model": type(model).__name__, "listed": "vit_s_dtn" in timm.list_models("vit_s_*"),
                  "hooks": len(hooks), "loader": type(timm.__spec__.loader).__name__}))
"""


@pytest.mark.parametrize("order", ["dtn_bench first", "timm first"])
def test_timm_creates_the_zoo_after_import_dtn_bench_in_either_order(order):
    """DESIGN: `timm.create_model("vit_s_dtn")` works after `import dtn_bench`. The zoo registers when timm is
    imported (or at once when it already is); the one-shot hook is then gone and timm keeps its own loader."""
    got = _last_json(_python(_ZOO, order))
    assert got["model"] == "LocalViT" and got["listed"] and got["hooks"] == 0
    assert got["loader"] != "_ThenRegisterZoo"


_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import dtn_bench
names = [m.name for m in pkgutil.walk_packages(dtn_bench.__path__, "dtn_bench.") if not m.name.endswith("__main__")]
for name in names:  # every module, in an order in which timm is first imported by one of ours
    importlib.import_module(name)
import timm
print(json.dumps({"modules": len(names), "zoo": "vit_t_dtn" in timm.list_models("vit_t_*")}))
"""


def test_every_module_imports_and_the_zoo_is_registered():
    """No module of the package imports timm while another one is half-imported in a way the zoo hook breaks."""
    got = _last_json(_python(_EVERY_MODULE, timeout=600))
    assert got["modules"] > 50 and got["zoo"]


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C while the command line starts
_INTERRUPTED_START = """
import importlib, runpy, sys

class CtrlC:  # a Ctrl-C that lands while the command line imports typer
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
entry = sys.argv[1]
if entry == "-m dtn_bench":
    sys.argv = ["dtn_bench", "--help"]
    runpy.run_module("dtn_bench", run_name="__main__", alter_sys=True)
else:  # what the console script pip writes does
    module, function = entry.split(":")
    main = getattr(importlib.import_module(module), function)
    sys.argv = ["dtn-bench", "--help"]
    sys.exit(main())
"""


def _console_script() -> str:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["dtn-bench"]


@pytest.mark.parametrize("entry", ["console script", "-m dtn_bench"])
def test_ctrl_c_while_the_command_line_starts_is_one_line(entry):
    proc = _python(_INTERRUPTED_START, _console_script() if entry == "console script" else entry)
    assert (proc.returncode, proc.stderr) == (130, "interrupted\n")


# ---------------------------------------------------------------------------------------------------------------------
# user text is printed as given
@pytest.mark.parametrize("argv, shown", [
    (["list", "models", "a[/b]"], "no models match 'a[/b]'"),
    (["list", "norms", "[bold]x"], "no norms match '[bold]x'"),
    (["lra", "listops", "--preset", "quick", "--data-dir", "data[test]"], "data[test]"),
    (["corrupt", "fx/src[/x]", "out/a06c", "--corruptions", "fog", "--severities", "1"], "src[/x]"),
    (["profile", "--bogus[/x]"], "--bogus[/x]"),
])
def test_errors_print_user_text_as_given(argv, shown, invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(*argv)
    assert_one_line_error(code, err, shown)


def test_settings_table_and_results_line_print_paths_as_given(tmp_path, capsys, wide_console):
    """The lra listops settings table and a suite's `results: PATH` line keep `[...]` in paths."""
    from test_suites import TOY, ToyConfig

    from dtn_bench.cli.lra import _settings_table
    from dtn_bench.cli.output import console, run_with_progress
    from dtn_bench.lra.config import ListOpsConfig
    from dtn_bench.suites import SUITES, register

    cfg = ListOpsConfig.from_preset("quick", data_dir="/data/listops[test]/[/x]")
    console.print(_settings_table(cfg, 1, "cpu", False))
    assert "/data/listops[test]/[/x]" in capsys.readouterr().out
    register(TOY)
    try:
        out = tmp_path / "res[bold]" / "[/x]"
        run_with_progress("toy", ToyConfig.from_preset(None, n=1), out, "r")
    finally:
        SUITES._entries.pop("toy", None)
    assert f"results: {out / 'toy' / 'r'}" in capsys.readouterr().out


def test_help_texts_lose_no_bracketed_text(invoke):
    """Help is rendered as rich markup: `[peer]` in `pip install 'dtn-bench[peer]'` must survive it."""
    code, out, _ = invoke("bench", "corrupt", "--help")
    assert code == 0 and "dtn-bench[peer]" in " ".join(out.replace("│", " ").split())
    from rich.text import Text
    from typer.main import get_command

    from dtn_bench.cli.app import app

    def texts(cmd):
        yield cmd.help or ""
        for p in cmd.params:
            yield getattr(p, "help", None) or ""
        if hasattr(cmd, "list_commands"):
            ctx = cmd.make_context("dtn-bench", [], resilient_parsing=True)
            for name in cmd.list_commands(ctx):
                yield from texts(cmd.get_command(ctx, name))

    for text in texts(get_command(app)):  # what rich shows is the text as written (escapes aside)
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text
