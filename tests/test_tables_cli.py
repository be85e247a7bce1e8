"""`dtn-bench table SUITE RUN...`: tables and plots re-rendered from finished runs (rendering only)."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = run_cli(argv)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_table_norms_from_the_committed_reference_run(tmp_path, capsys):
    run = REPO / "results" / "bench-norms" / "cpu-2core-xeon"
    code, out = _cli(capsys, ["table", "norms", str(run), "--out", str(tmp_path / "t")])
    assert code == 0, out
    md = (tmp_path / "t" / "table.md").read_text()
    assert "dtn_authors" in md and "DTN speed-up vs authors' algorithm" in md
    assert md == (run / "table.md").read_text()  # the same rows render the same document
    assert (tmp_path / "t" / "norms.png").stat().st_size > 0
    code, out = _cli(capsys, ["table", "norms", str(run), "--format", "tex"])
    assert code == 0 and "\\begin{tabular}" in out


def test_table_lra_scaling_renders_slopes(tmp_path, capsys):
    res = tmp_path / "res"
    code, out = _cli(capsys, ["bench", "lra-scaling", "--preset", "quick", "--lengths", "64,128", "--models",
                              "transformer", "--norms", "layernorm", "--out", str(res), "--run-id", "s"])
    assert code == 0, out
    code, out = _cli(capsys, ["table", "lra-scaling", str(res / "bench-lra-scaling" / "s"), "--out",
                              str(tmp_path / "t")])
    assert code == 0, out
    assert (tmp_path / "t" / "table.md").read_text() == (res / "bench-lra-scaling" / "s" / "table.md").read_text()
    assert (tmp_path / "t" / "scaling.png").is_file()


def test_table_of_the_wrong_suite_is_an_error(capsys):
    run = REPO / "results" / "bench-norms" / "cpu-2core-xeon"
    code, out = _cli(capsys, ["table", "listops", str(run)])
    assert code == 2 and "no lra-listops rows" in out
    code, out = _cli(capsys, ["table", "norms", str(run), "--format", "html"])
    assert code == 2 and "--format" in out
