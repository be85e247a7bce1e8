"""ListOps data: renderer and operator known answers, deterministic generation, validating loader, caches, CLI."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from dtn_bench.data import listops
from dtn_bench.errors import DTNBenchError

SMALL = dict(train=300, val=50, test=50, min_length=20, max_length=200, max_depth=6)
FILES = [f"basic_{split}.tsv" for split in listops.SPLITS]


def read_rows(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "Source\tTarget"
    assert lines[-1] == ""  # every line ends with a newline
    return [tuple(line.split("\t")) for line in lines[1:-1]]


# An evaluator and parser written independently of the module: recursive descent over the tokens.
OPS = {"[MIN": min, "[MAX": max, "[MED": lambda v: int(statistics.median(v)), "[SM": lambda v: sum(v) % 10}


def parse_tokens(tokens: list[str]):
    """(tree, value) of a token list such as ``["[MAX", "2", "9", "X"]``; trees as ``(op, children)`` or digits."""
    pos = 0

    def node():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok.isdigit():
            return int(tok), int(tok)
        children, values = [], []
        while tokens[pos] != "X":
            child, value = node()
            children.append(child)
            values.append(value)
        pos += 1
        assert len(children) >= 2
        return (tok, children), OPS[tok](values)

    tree, value = node()
    assert pos == len(tokens)
    return tree, value


def source_tokens(source: str) -> list[str]:
    return source.replace("(", "").replace(")", "").replace("]", "X").split()


# ------------------------------------------------------------------------------------------------------------------
def test_renderer_known_answer():
    source = listops.render(("MAX", [2, 9]))
    assert source == "( ( ( [MAX 2 ) 9 ) ] )"
    assert listops.render(("[MAX", [2, 9])) == source
    assert listops.evaluate(("MAX", [2, 9])) == 9
    assert listops.tokenize(source) == ["[MAX", "2", "9", "X"]
    assert listops.encode(source) == [listops.VOCAB[t] for t in ("[MAX", "2", "9", "X")]
    nested = ("SM", [("MIN", [3, 4, 5]), 8])
    assert listops.render(nested) == "( ( ( [SM ( ( ( ( [MIN 3 ) 4 ) 5 ) ] ) ) 8 ) ] )"
    assert listops.evaluate(nested) == 1


@pytest.mark.parametrize("op, values, expected", [
    ("MED", [1, 2, 3, 6], 2),  # int(2.5)
    ("MED", [7, 8], 7),  # int(7.5)
    ("MED", [9, 1, 5], 5),
    ("MED", [4, 4, 5, 5], 4),
    ("SM", [9, 8, 7], 4),  # 24 % 10
    ("SM", [5, 5], 0),
    ("MIN", [7, 3, 9], 3),
    ("MAX", [7, 3, 9], 9),
])
def test_operator_known_answers(op, values, expected):
    assert listops.apply_operator(op, values) == expected
    assert listops.evaluate((op, values)) == expected


def test_vocabulary_ids_are_fixed():
    assert (listops.PAD_ID, listops.UNK_ID, listops.CLS_ID) == (0, 1, 2)
    assert listops.VOCAB_SIZE == 18
    assert [listops.VOCAB[t] for t in ("[MIN", "[MAX", "[MED", "[SM", "X", "0", "9")] == [3, 4, 5, 6, 7, 8, 17]


# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("listops") / "data"
    summary = listops.generate(out, **SMALL, workers=2)
    assert summary.counts == {"train": 300, "val": 50, "test": 50}
    assert sum(summary.label_counts["all"]) == 400
    assert 0 < summary.majority_share <= 1
    return out


def test_generation_is_deterministic_across_runs_and_workers(small_data, tmp_path, monkeypatch):
    again = listops.generate(tmp_path / "again", **SMALL, workers=2)
    one = listops.generate(tmp_path / "one", **SMALL, workers=1)
    # small shards: several tasks, run out of order by the pool, must still give the same bytes
    monkeypatch.setattr(listops, "SHARD_SIZE", 64)
    a = listops.generate(tmp_path / "a", **SMALL, workers=2)
    b = listops.generate(tmp_path / "b", **SMALL, workers=1)
    for name in FILES:
        reference = (small_data / name).read_bytes()
        assert (again.out_dir / name).read_bytes() == reference
        assert (one.out_dir / name).read_bytes() == reference
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes()
    other_seed = listops.generate(tmp_path / "seed1", **{**SMALL, "seed": 1}, workers=1)
    assert (other_seed.out_dir / FILES[0]).read_bytes() != (small_data / FILES[0]).read_bytes()
    assert not [p.name for p in small_data.iterdir() if p.name not in FILES]  # no temporary files left


def test_generated_lines_follow_the_spec(small_data):
    sources: dict[str, set[str]] = {}
    for name, count in zip(FILES, (300, 50, 50), strict=True):
        rows = read_rows(small_data / name)
        assert len(rows) == count
        assert len({s for s, _ in rows}) == count  # no duplicate inside a split
        sources[name] = {s for s, _ in rows}
        for source, target in rows:
            tokens = source_tokens(source)
            assert SMALL["min_length"] < len(tokens) < SMALL["max_length"]
            tree, value = parse_tokens(tokens)
            assert target == str(value)
            assert listops.render(tree) == source  # the generator renders exactly like render()
    a, b, c = sources.values()
    assert not (a & b or a & c or b & c)  # splits are disjoint


def test_dedup_keeps_distinct_samples_and_reports_too_few(tmp_path):
    # max_depth 2, max_args 2: 10 digits and 4 * 100 two-digit operators, 410 distinct trees in all
    tiny = dict(min_length=0, max_length=5, max_depth=2, max_args=2)
    summary = listops.generate(tmp_path / "ok", train=100, val=50, test=50, **tiny, workers=1)
    assert summary.duplicates > 0
    seen = [s for name in FILES for s, _ in read_rows(tmp_path / "ok" / name)]
    assert len(seen) == len(set(seen)) == 200
    with pytest.raises(DTNBenchError, match="distinct"):
        listops.generate(tmp_path / "too_many", train=500, val=0, test=0, **tiny, workers=1)
    assert not (tmp_path / "too_many").exists()  # nothing half-written, not even the folder it made


@pytest.mark.parametrize("kwargs, match", [
    (dict(train=-1), "train count -1"),
    (dict(val=-5), "val count -5"),
    (dict(train=0, val=0, test=0), "at least one"),
    (dict(min_length=-1), "min_length"),
    (dict(min_length=50, max_length=50), "min_length"),
    (dict(max_depth=0), "max_depth"),
    (dict(max_args=1), "max_args"),
    (dict(max_depth=2), "no ListOps tree"),  # lengths 1 and 4..12 only
    (dict(min_length=4, max_length=5, max_depth=2, max_args=2), "no ListOps tree"),
    (dict(workers=0), "workers"),
    (dict(train=1.5), "integer"),
])
def test_generate_rejects_bad_arguments(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(DTNBenchError, match=match) as info:
        listops.generate(out, **kwargs)
    assert "\n" not in str(info.value)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------------
def test_loader_shapes_labels_and_ids(small_data):
    for split, count in (("train", 300), ("val", 50), ("test", 50)):
        loaded = listops.load_split(small_data, split, max_len=200)
        rows = read_rows(small_data / f"basic_{split}.tsv")
        assert len(loaded) == count
        assert loaded.ids.shape == (count, 200) and loaded.ids.dtype == listops.ID_DTYPE
        assert loaded.labels.tolist() == [int(t) for _, t in rows]
        assert loaded.truncated == 0
        inverse = {i: t for t, i in listops.VOCAB.items()}
        for row in (0, count - 1):
            n = int(loaded.lengths[row])
            assert [inverse[i] for i in loaded.ids[row, :n]] == source_tokens(rows[row][0])
            assert not loaded.ids[row, n:].any()  # padded with <pad> = 0


def test_generated_files_are_written_as_the_official_csv_writer_writes(small_data, tmp_path):
    """CRLF line endings, tab delimiter, header Source<TAB>Target: the bytes Python's csv.writer (the official
    generator's writer) produces for the same rows; the loader reads the file and an LF copy alike."""
    import csv
    import io

    for name in FILES:
        raw = (small_data / name).read_bytes()
        lines = raw.split(b"\r\n")
        assert lines[-1] == b"" and all(b"\n" not in line and b"\r" not in line for line in lines)
        text = io.StringIO()
        writer = csv.writer(text, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows(read_rows(small_data / name))
        assert raw == text.getvalue().encode()
    lf = tmp_path / "lf"
    lf.mkdir()
    for name in FILES:
        (lf / name).write_bytes((small_data / name).read_bytes().replace(b"\r\n", b"\n"))
    for split in listops.SPLITS:
        a, b = listops.load_split(small_data, split, 200), listops.load_split(lf, split, 200)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels) and len(a) > 0


GOOD = "( ( ( [MAX 2 ) 9 ) ] )\t9\n"


def write_split(folder: Path, body: str | bytes, header: str = "Source\tTarget\n", name: str = "train") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = body if isinstance(body, bytes) else body.encode()
    (folder / f"basic_{name}.tsv").write_bytes(header.encode() + data)
    return folder


@pytest.mark.parametrize("header, body, line, match", [
    ("Src\tTarget\n", GOOD, 1, "header"),
    ("Source,Target\n", GOOD, 1, "header"),
    ("", "", 1, "empty file"),
    ("Source\tTarget\n", GOOD + "( ( [MAX 2 ) 9 ] ) 9\n", 3, "0 tabs"),
    ("Source\tTarget\n", GOOD + GOOD + "[MAX 2 9 ]\t9\textra\n", 4, "2 tabs"),
    ("Source\tTarget\n", GOOD + "\n" + GOOD, 3, "empty line"),
    ("Source\tTarget\n", GOOD + GOOD + "[MAX 2 9 ]\tNA\n", 4, "'NA' is not an integer"),
    ("Source\tTarget\n", GOOD + "[MAX 2 9 ]\t\n", 3, "is not an integer"),
    ("Source\tTarget\n", GOOD + "[MAX 2 9 ]\t1.5\n", 3, "is not an integer"),
    ("Source\tTarget\n", GOOD + "[MAX 2 9 ]\t12\n", 3, "12 is not in 0..9"),
    ("Source\tTarget\n", GOOD + "[MAX 2 9 ]\t-1\n", 3, "not in 0..9"),
    ("Source\tTarget\n", GOOD + "[MAX 2 9 ] ]\t9\n", 3, "token 5 closes no open"),
    ("Source\tTarget\n", GOOD + GOOD + "] [MAX 2 9\t9\n", 4, "token 1 closes no open"),
    ("Source\tTarget\n", GOOD + "[MAX 2 [MIN 9 1 ]\t2\n", 3, "1 operator"),
    ("Source\tTarget\n", GOOD + "[FOO 2 9 ]\t9\n", 3, "unknown token '\\[FOO'"),
    ("Source\tTarget\n", GOOD + "[MAX 2 a ]\t9\n", 3, "unknown token 'a'"),
    ("Source\tTarget\n", GOOD + "[MAX 2 <pad> ]\t9\n", 3, "unknown token '<pad>'"),
    ("Source\tTarget\n", GOOD + "( ( ) )\t9\n", 3, "empty Source"),
    ("Source\tTarget\n", GOOD.encode() + b"[MAX 2 \xff ]\t9\n", 3, "not UTF-8"),
])
def test_malformed_files_name_file_and_line(tmp_path, header, body, line, match):
    folder = write_split(tmp_path / "bad", body, header=header)
    with pytest.raises(DTNBenchError, match=match) as info:
        listops.load_split(folder, "train", max_len=50)
    message = str(info.value)
    assert "\n" not in message
    assert f"basic_train.tsv line {line}:" in message


def test_missing_folder_and_split_file(tmp_path):
    with pytest.raises(DTNBenchError, match="does not exist") as info:
        listops.load_split(tmp_path / "nowhere", "train", max_len=10)
    assert "nowhere" in str(info.value)
    folder = write_split(tmp_path / "data", GOOD)
    with pytest.raises(DTNBenchError, match="basic_val.tsv not found"):
        listops.load_split(folder, "val", max_len=10)
    with pytest.raises(DTNBenchError, match="unknown ListOps split"):
        listops.load_split(folder, "dev", max_len=10)
    with pytest.raises(DTNBenchError, match="policy"):
        listops.load_split(folder, "train", max_len=10, policy="drop")


def test_header_only_file_loads(tmp_path):
    folder = write_split(tmp_path / "data", "")
    empty = listops.load_split(folder, "train", max_len=8)
    assert len(empty) == 0 and empty.ids.shape == (0, 8)


def test_length_policy(tmp_path):
    body = ("[MAX 2 9 3 ]\t9\n"  # 5 tokens
            "[SM 1 2 3 4 5 6 7 8 9 1 ]\t6\n"  # 12 tokens
            "( ( ( [MIN 4 ) 5 ) ] )\t4\n")  # 4 tokens
    folder = write_split(tmp_path / "data", body)
    with pytest.raises(DTNBenchError, match="line 3: sequence of 12 tokens is longer than max_len 8"):
        listops.load_split(folder, "train", max_len=8)
    cut = listops.load_split(folder, "train", max_len=8, policy="truncate")
    assert cut.truncated == 1
    assert cut.lengths.tolist() == [5, 8, 4]
    assert cut.ids[1].tolist() == [listops.VOCAB[t] for t in "[SM 1 2 3 4 5 6 7".split()]
    assert cut.labels.tolist() == [9, 6, 4]
    fits = listops.load_split(folder, "train", max_len=12)
    assert fits.truncated == 0 and fits.lengths.tolist() == [5, 12, 4]


# ------------------------------------------------------------------------------------------------------------------
def test_token_cache_reused_and_invalidated(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    for split in listops.SPLITS:
        write_split(folder, GOOD + "[MIN 4 5 ]\t4\n", name=split)
    cache = tmp_path / "cache"
    first = listops.load_or_build(folder, 16, cache_dir=cache)
    assert set(first) == set(listops.SPLITS)
    assert len(list(cache.glob("*.npz"))) == 3

    def no_tokenizing(source):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(listops, "tokenize", no_tokenizing)
    second = listops.load_or_build(folder, 16, cache_dir=cache)
    for split in listops.SPLITS:
        np.testing.assert_array_equal(second[split].ids, first[split].ids)
        np.testing.assert_array_equal(second[split].labels, first[split].labels)
        np.testing.assert_array_equal(second[split].lengths, first[split].lengths)
    with pytest.raises(AssertionError, match="tokenised again"):  # other max_len: another cache entry
        listops.load_or_build(folder, 17, cache_dir=cache, splits=("train",))

    write_split(folder, GOOD + "[MIN 4 5 ]\t4\n[MAX 1 2 ]\t2\n", name="train")  # the file changes
    with pytest.raises(AssertionError, match="tokenised again"):
        listops.load_or_build(folder, 16, cache_dir=cache, splits=("train",))
    monkeypatch.undo()
    third = listops.load_or_build(folder, 16, cache_dir=cache, splits=("train",))
    assert third["train"].labels.tolist() == [9, 4, 2]
    assert len(list(cache.glob("train-*.npz"))) == 1  # the stale entry is gone


def test_ensure_generated_once(tmp_path, monkeypatch):
    args = dict(train=20, val=5, test=5, min_length=10, max_length=60, max_depth=5)
    folder = listops.ensure_generated(tmp_path / "cache", args, workers=1)
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("listops-")
    assert [len(read_rows(folder / name)) for name in FILES] == [20, 5, 5]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no temporary folder left

    def no_generating(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr(listops, "generate", no_generating)
    assert listops.ensure_generated(tmp_path / "cache", args) == folder
    with pytest.raises(AssertionError, match="generated again"):
        listops.ensure_generated(tmp_path / "cache", {**args, "seed": 3})
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]
    with pytest.raises(DTNBenchError, match="unknown ListOps generator arguments"):
        listops.ensure_generated(tmp_path / "cache", {"trian": 5})


def test_the_spec_is_the_one_home_of_the_generator_defaults(tmp_path):
    """generate(), check_generate_args(), the ``lra generate`` options, ListOpsConfig's gen_* fields and the cache all
    read ListOpsSpec; the cache folder of a spec is the one the committed quick run names in its rows."""
    import inspect

    from dtn_bench.cli.lra import lra_generate
    from dtn_bench.lra.config import ListOpsConfig

    assert listops.LRA_SPEC == listops.ListOpsSpec(96_000, 2_000, 2_000, 0, 500, 2_000, 10, 10)
    assert listops.check_generate_args() == listops.LRA_SPEC.as_dict() == listops.DEFAULT_GENERATE_ARGS
    assert ListOpsConfig().generator_spec() == listops.LRA_SPEC
    options = inspect.signature(lra_generate).parameters
    assert {name: options[name].default for name in listops.LRA_SPEC.as_dict()} == listops.LRA_SPEC.as_dict()
    quick = ListOpsConfig.from_preset("quick").generator_spec()
    assert (quick.train, quick.val, quick.test, quick.min_length, quick.max_length) == (20_000, 500, 1_000, 20, 200)
    assert quick.cache_name() == "listops-60a4e2d87ba5e82e"  # results/lra-listops/cpu-2core-quick: data column
    spec = listops.ListOpsSpec(**{**SMALL, "train": 40})
    by_spec = listops.generate(tmp_path / "spec", spec, workers=1)
    by_args = listops.generate(tmp_path / "args", **{**SMALL, "train": 40}, workers=1)
    assert by_spec.args == by_args.args == spec.as_dict()
    for name in FILES:
        assert (by_spec.out_dir / name).read_bytes() == (by_args.out_dir / name).read_bytes()
    with pytest.raises(DTNBenchError, match="unknown ListOps generator arguments"):
        listops.generate(tmp_path / "bad", spec, trian=5)


# ------------------------------------------------------------------------------------------------------------------
def test_cli_generate_tiny(tmp_path, capsys):
    out = tmp_path / "cli"
    code = run_cli(["lra", "generate", "--out", str(out), "--train", "40", "--val", "5", "--test", "5",
                    "--min-length", "20", "--max-length", "200", "--max-depth", "6", "--workers", "1"])
    assert code == 0
    assert [len(read_rows(out / name)) for name in FILES] == [40, 5, 5]
    printed = capsys.readouterr().out
    assert "majority-class share" in printed and "basic_train.tsv" in printed


def test_cli_generate_rejects_negative_count(tmp_path, capsys):
    out = tmp_path / "cli"
    assert run_cli(["lra", "generate", "--out", str(out), "--train", "-1"]) == 2
    err = capsys.readouterr().err
    assert "train count -1" in err and "Traceback" not in err
    assert not out.exists()


def test_failed_generate_leaves_no_folder_it_made(tmp_path):
    # issue 21 section 5: a failed or interrupted `lra generate` left an empty output folder
    out = tmp_path / "a" / "b"
    with pytest.raises(DTNBenchError, match="only 400 distinct ListOps trees"):
        listops.generate(out, train=1000, val=1, test=1, min_length=1, max_length=20, max_depth=2, max_args=2,
                         workers=1)
    assert not (tmp_path / "a").exists()
    (tmp_path / "mine").mkdir()  # a folder that was there before stays
    with pytest.raises(DTNBenchError):
        listops.generate(tmp_path / "mine", train=1000, val=1, test=1, min_length=1, max_length=20, max_depth=2,
                         max_args=2, workers=1)
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(DTNBenchError, match="ListOps output folder .*/file/sub: .*/file is a file, not a folder"):
        listops.generate(tmp_path / "file" / "sub", train=5, val=1, test=1, workers=1)
