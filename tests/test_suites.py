"""The one suite shape: every suite registered as a Suite, and a new (toy) suite needs one module and one
registration to run, resume and render."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
from cli_helpers import Killed, assert_one_line_message, kill_at, record, run_cli

from dtn_bench.errors import DTNBenchError
from dtn_bench.results.io import read_rows
from dtn_bench.results.schema import make_row
from dtn_bench.runner import ConsoleTable, PresetConfig, Report, Suite, run_suite
from dtn_bench.suites import SUITES, all_suites, get_suite, register


@pytest.mark.parametrize("name", SUITES.names())
def test_every_suite_is_a_registered_suite_object(name):
    suite = get_suite(name)
    assert isinstance(suite, Suite) and suite.name == name and suite.description
    assert suite.metrics and all(isinstance(v, bool) for v in suite.metrics.values())
    if suite.command:  # a table command renders the suite's report
        assert suite.report is not None and suite.table_help


# ---------------------------------------------------------------------------------------------------------------------
# a toy suite: this module and one registration
@dataclass(frozen=True)
class ToyConfig(PresetConfig):
    """Squares of 1..n (a suite with no preset file: from_preset(None) uses the dataclass defaults)."""

    SUITE = "toy"
    n: int = 3
    offset: float = 0.0

    def validate(self) -> None:
        if self.n <= 0:
            raise DTNBenchError(f"toy: --n must be > 0, got {self.n}")


def toy_run(cfg: ToyConfig, ctx):
    for i in range(1, cfg.n + 1):
        if ctx.is_done(str(i)):
            continue
        yield f"item {i}", [make_row("toy", "m", "none", "square", i * i + cfg.offset, unit="1", item=str(i))]


def toy_render(df: pd.DataFrame, fmt: str) -> str:
    main = toy_main(df)
    return ("# toy\n" if fmt == "md" else "% toy\n") + main.to_string() + "\n"


def toy_main(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["metric"] == "square"][["item", "value"]].reset_index(drop=True)


TOY = Suite("toy", "squares, for the tests", {"square": True}, ToyConfig, toy_run,
            Report(toy_render, toy_main, "squares", settings=((("offset",), ()),),
                   console=lambda df: [ConsoleTable("toy", ("n",), ((str(len(df)),),))]),
            command="toy", resume_key=("item",), steps=lambda cfg: cfg.n, table_help="Toy table.")


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    SUITES._entries.pop("toy", None)


def test_a_toy_suite_runs_resumes_and_renders(toy, tmp_path, capsys):
    cfg = ToyConfig.from_preset(None, n=3)

    with pytest.raises(Killed):
        run_suite("toy", cfg, out=tmp_path, run_id="r", on_event=kill_at("step"))
    assert list(read_rows(tmp_path / "toy" / "r")["value"]) == [1.0]  # what finished is kept
    events = []
    result = run_suite(toy, cfg, out=tmp_path, run_id="r", resume=True,
                       on_event=record(events))
    assert result.path == tmp_path / "toy" / "r"
    assert list(result.rows["value"]) == [1.0, 4.0, 9.0]  # item 1 not measured again
    assert events[0] == ("start", {"total": 3, "skipped": 1})
    assert [i["label"] for k, i in events if k == "step"] == ["item 2", "item 3"] and events[-1][0] == "rendered"
    assert (result.path / "table.md").read_text().startswith("# toy")
    with pytest.raises(DTNBenchError, match="different config"):
        run_suite(toy, ToyConfig.from_preset(None, n=4), out=tmp_path, run_id="r", resume=True)
    # the generic table command knows it
    code = run_cli(["table", "toy", str(result.path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("# toy")
    assert "toy" in [s.name for s in all_suites()]


def test_toy_preset_precedence_and_bad_values(toy):
    assert ToyConfig.from_preset(None).n == 3  # dataclass default
    assert ToyConfig.from_preset(None, n=5, offset=None).offset == 0.0  # a flag not given (None) does not override
    with pytest.raises(DTNBenchError, match="toy: --n must be > 0"):
        ToyConfig.from_preset(None, n=0)
    with pytest.raises(DTNBenchError, match="unknown settings"):
        ToyConfig.from_preset(None, m=1)


def test_bench_norms_preset_precedence():
    from dtn_bench.bench.norms import NormBenchConfig

    cfg = NormBenchConfig.from_preset("quick")
    assert cfg.preset == "quick"
    assert NormBenchConfig.from_preset("quick", batch=3).batch == 3
    assert NormBenchConfig.from_preset("quick", device=None).device == "cpu"


def test_a_run_that_fails_before_its_first_row_leaves_no_folder(toy, tmp_path):
    # issue 21 section 5: failed runs left folders holding only config.json and env.json (22 after the hostile pass)
    def failing(cfg, ctx):
        raise DTNBenchError("bad data")
        yield  # pragma: no cover - a generator

    def late(cfg, ctx):
        yield from toy_run(cfg, ctx)
        raise DTNBenchError("failed after its rows")

    from dataclasses import replace

    root = tmp_path / "new" / "results"
    with pytest.raises(DTNBenchError, match="bad data"):
        run_suite(replace(TOY, run=failing), ToyConfig(), out=root, run_id="r")
    assert not (tmp_path / "new").exists()  # the run folder and the folders made for it
    (tmp_path / "kept" / "toy").mkdir(parents=True)
    with pytest.raises(DTNBenchError, match="bad data"):
        run_suite(replace(TOY, run=failing), ToyConfig(), out=tmp_path / "kept", run_id="r")
    assert (tmp_path / "kept" / "toy").is_dir() and not list((tmp_path / "kept" / "toy").iterdir())
    with pytest.raises(DTNBenchError, match="after its rows"):
        run_suite(replace(TOY, run=late), ToyConfig(), out=tmp_path / "kept", run_id="r")
    assert len(read_rows(tmp_path / "kept" / "toy" / "r")) == 3  # rows written: the folder stays, to resume


_WRONG = {bool: ("no", "a text for a bool"), int: (64.5, "a fraction for an integer"),
          float: (float("nan"), "nan for a number"), str: (5, "a number for a text")}


def _fields_and_wrong_values():
    import dataclasses
    import typing

    for name in SUITES.names():
        config = get_suite(name).config
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            annotation = hints[f.name]
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if typing.get_origin(annotation) is tuple:
                yield name, f.name, "x"  # a bare value where a list is expected
            elif annotation in _WRONG or len(args) == 1 and args[0] in _WRONG:
                yield name, f.name, _WRONG[annotation if annotation in _WRONG else args[0]][0]


@pytest.mark.parametrize("suite, field, value", list(_fields_and_wrong_values()))
def test_every_config_field_refuses_a_value_of_another_type(suite, field, value):
    # issue 21 section 5: values of the wrong type passed validation and meant something else ("no" -> True)
    config = get_suite(suite).config
    with pytest.raises(DTNBenchError) as ei:
        config.from_preset(None, **{field: value})
    # a suite whose settings are key=value (train's --set) names the field so; the others name the flag
    named = f"{field}=" if suite == "train" else f"--{field.replace('_', '-')} "
    assert_one_line_message(ei.value, f"{config.SUITE}", named, "expected")
