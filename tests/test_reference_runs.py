"""Every committed reference run under ``results/`` re-renders byte-identically from its rows.

Each run folder's documents (``table.md``, ``table.tex``, and ``table.csv`` where it keeps one) are rendered again by
its suite's report from its ``rows.csv`` and compared byte for byte with the committed files; a combined folder
(``results/imagenet-c/demo-combined``) is rendered again by ``dtn-bench table`` from the runs its README names,
paired documents included. A change to a report, the engine or the runner that moved a committed number or a
character of a committed table fails here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ("table.md", "table.tex", "table.csv")


def _committed_runs() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True, check=True)
        files = out.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the folders as they are
        files = [p.relative_to(REPO).as_posix() for p in (REPO / "results").glob("*/*/rows.csv")]
    return sorted({(REPO / f).parent for f in files if f.endswith("/rows.csv")})


RUNS = _committed_runs()


def test_the_reference_runs_are_found():
    assert {r.parent.name for r in RUNS} >= {"bench-norms", "bench-lra-scaling", "profile", "lra-listops",
                                             "imagenet-c", "robustness"}


@pytest.mark.parametrize("run", RUNS, ids=[f"{p.parent.name}/{p.name}" for p in RUNS])
def test_committed_run_renders_byte_identically(run):
    from dtn_bench.results.io import read_rows
    from dtn_bench.suites import get_suite

    df = read_rows(run)
    suite = get_suite(str(df["suite"].iloc[0]))
    names = [n for n in DOCUMENTS if (run / n).is_file()]
    assert names, f"{run} keeps no document"
    rendered = suite.report.documents(df, names, runs=[run])  # a report may read its runs (per-image bits)
    for name in names:
        assert rendered[name] == (run / name).read_text(encoding="utf-8"), f"{run / name} renders differently"


def test_combined_imagenet_c_demo_renders_byte_identically(tmp_path, invoke, monkeypatch):
    """``table imagenet-c`` of the two committed demo runs gives the committed combined documents, paired included.

    The runs are named as the README's command names them (relative to the repository: paired.csv records them).
    """
    committed = REPO / "results" / "imagenet-c" / "demo-combined"
    monkeypatch.chdir(REPO)
    runs = ("results/imagenet-c/demo-vit_t_ln", "results/imagenet-c/demo-vit_t_dtn")
    code, _, err = invoke("table", "imagenet-c", *runs, "--out", str(tmp_path))
    assert code == 0, err
    for name in ("table.md", "table.tex", "table.csv", "paired.md", "paired.tex", "paired.csv"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
