"""ImageNet-C per-image correctness (one bit per image per pair) and the paired statistics of ``table imagenet-c``.

A tiny generated layout (2 corruptions x 2 severities x 3 classes x 3 images, one unreadable file) is evaluated by two
3-class models with seeded random weights; their bits are checked against a plain loop over the images, and the
table's interval and McNemar counts against :mod:`dtn_bench.stats` and a hand count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import Killed, assert_one_line_error, kill_at
from test_imagenet_c import BAD, CLASSES, CORR, SEVS, make_layout

from dtn_bench.metrics import ALEXNET_ERRORS
from dtn_bench.shifts import correctness as C
from dtn_bench.stats import bootstrap_mce_difference, pack_bits

PAIRS = [(c, s) for c in CORR for s in SEVS]
LABEL = "vit_t_dtn [random init (seed 1)] - vit_t_ln [random init (seed 0)]"
KW = dict(num_classes=3, corruptions=CORR, severities=SEVS, batch_size=4, workers=0, device="cpu")


def test_bits_round_trip_and_layout(tmp_path):
    """The bits file, image list and index of one pair: layout, packing and round trip."""
    paths = [f"n0000000{k}/img{k}.JPEG" for k in range(10)]
    correct = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 1], dtype=bool)
    bits = C.write_pair(tmp_path, "fog", 3, paths, correct, unreadable=[paths[4]])
    assert bits == tmp_path / "correct" / "fog-3.bits"
    # image i is bit i % 8 of byte i // 8, least significant first; the padding bits are 0
    assert bits.read_bytes() == bytes([0b00001101, 0b00000011]) == pack_bits(correct)
    digest = C.images_sha256(paths)
    listing = tmp_path / "correct" / f"images-{digest[:16]}.txt"
    assert listing.read_text() == "".join(p + "\n" for p in paths)
    index = json.loads((tmp_path / "correct" / "index.json").read_text())
    assert index == {"format": C.FORMAT, "pairs": {"fog-3": {
        "corruption": "fog", "severity": 3, "n": 10, "bits": "fog-3.bits", "images": listing.name,
        "images_sha256": digest, "unreadable": [paths[4]]}}}
    C.write_pair(tmp_path, "clean", 0, paths, ~correct)  # same images: the list is shared
    run = C.read_run(tmp_path)
    assert set(run.pairs) == {("fog", 3), ("clean", 0)}
    assert run.correct(("fog", 3)).tolist() == correct.tolist()
    assert run.correct(("clean", 0)).tolist() == (~correct).tolist()
    assert run.images(("clean", 0)) == paths
    names = sorted(p.name for p in (tmp_path / "correct").iterdir())
    assert names == sorted(["clean-0.bits", "fog-3.bits", "index.json", listing.name])  # no temporary files left
    assert C.read_run(tmp_path / "elsewhere") is None
    with pytest.raises(ValueError, match="3 correctness values for 10 images"):
        C.write_pair(tmp_path, "fog", 1, paths, correct[:3])


def _plain_loop(model: str, data: Path, seed: int) -> dict:
    """Top-1 right of every image of every pair, one image at a time (no loader, no sharding)."""
    from torchvision.io import ImageReadMode, decode_image

    from dtn_bench.imagenet_c import make_config
    from dtn_bench.imagenet_c.evaluation import build_model, model_input

    net, _ = build_model(make_config(model, data, seed=seed, **KW))
    _, mean, std = model_input(net)
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    out = {}
    for c, s in PAIRS:
        folder = data / c / str(s)
        rels = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*"))
        right = []
        for rel in rels:
            try:
                img = decode_image(str(folder / rel), mode=ImageReadMode.RGB)
            except RuntimeError:
                right.append(False)  # unreadable: no prediction, stored as wrong
                continue
            with torch.inference_mode():
                logits = net((img[None].float() / 255 - mean) / std)
            right.append(int(logits.argmax(1)) == CLASSES.index(rel.split("/")[0]))
        out[(c, s)] = (rels, np.array(right))
    return out


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The layout evaluated by vit_t_ln and vit_t_dtn (seeded random 3-class weights), and a subset run of the DTN."""
    from dtn_bench.imagenet_c import evaluate

    base = tmp_path_factory.mktemp("paired")
    data = make_layout(base / "data")
    (data / BAD).write_bytes(b"this is not a JPEG")
    out = base / "results"
    runs = {}
    for model, seed in (("vit_t_ln", 0), ("vit_t_dtn", 1)):
        runs[model] = evaluate(model, data, out=out, run_id=model, seed=seed, **KW).path
    runs["subset"] = evaluate("vit_t_dtn", data, out=out, run_id="subset", seed=1, subset=1, **KW).path
    return {"base": base, "data": data, "runs": runs}


def test_bits_equal_a_plain_loop(two):
    """Each run's bits are a plain one-image-at-a-time loop's top-1 hits, and the rows' error agrees."""
    for model, seed in (("vit_t_ln", 0), ("vit_t_dtn", 1)):
        run = C.read_run(two["runs"][model])
        assert set(run.pairs) == set(PAIRS)
        expected = _plain_loop(model, two["data"], seed)
        rows = pd.read_parquet(two["runs"][model] / "rows.parquet")
        for key in PAIRS:
            rels, right = expected[key]
            assert run.images(key) == rels
            assert run.correct(key).tolist() == right.tolist(), (model, key)
            assert run.pairs[key].unreadable == ((BAD.split("/", 2)[2],) if key == ("fog", 2) else ())
            n, err = (rows[(rows["corruption"] == key[0]) & (rows["severity"] == key[1]) & (rows["metric"] == m)]
                      ["value"].item() for m in ("n_images", "top1_err"))
            assert right.sum() == round((1 - err) * n)  # the rows' error counts the same hits


def _paired_csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "paired.csv")


def test_table_interval_is_the_bootstrap_of_the_bits(two, invoke):
    """The table's interval is stats.bootstrap_mce_difference of the two runs' bits."""
    ln, dtn = two["runs"]["vit_t_ln"], two["runs"]["vit_t_dtn"]
    out = two["base"] / "combined"
    code, printed, err = invoke("table", "imagenet-c", str(ln), str(dtn), "--out", str(out), "--n-boot", "300")
    assert code == 0, err
    assert "Paired mCE difference" in printed and LABEL in printed
    row = _paired_csv(out).iloc[0]
    a, b = C.read_run(dtn), C.read_run(ln)
    expected = bootstrap_mce_difference({k: a.correct(k) for k in PAIRS}, {k: b.correct(k) for k in PAIRS},
                                        ALEXNET_ERRORS, n_boot=300, seed=0, joint=False)
    # fog/2 also lists the unreadable file: the pairs' image lists differ, so each pair is resampled on its own
    assert row["comparison"] == LABEL and row["pairs"] == 4 and row["images_per_pair"] == "varies"
    assert (row["mce_difference"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (expected.mean, expected.low, expected.high), abs=1e-8)
    assert bool(row["significant"]) == expected.significant
    verdict = "not significant" if not expected.significant else "significant"
    cells = [c.strip() for c in (out / "paired.md").read_text().splitlines()[4].split("|")]
    assert cells[1:6] == [LABEL, "4 of the 75", "varies", expected.format(2), verdict]
    assert "4 of the 75" in printed and "2 unreadable image(s) in the compared runs count as wrong" in printed
    assert "each pair resampled on its own where the pairs hold different image lists" in printed
    for name in ("paired.md", "paired.tex", "paired.csv", "table.md"):
        assert (out / name).is_file()
    assert not (out / "mcnemar.md").exists()
    # the default: 1000 resamples
    code, printed, _ = invoke("table", "imagenet-c", str(ln), str(dtn))
    assert code == 0 and "1000 resamples" in printed


def test_mcnemar_counts_are_a_hand_count(two, invoke):
    """--mcnemar: b and c per pair are the discordant images counted by hand."""
    ln, dtn = two["runs"]["vit_t_ln"], two["runs"]["vit_t_dtn"]
    out = two["base"] / "mcnemar"
    code, printed, err = invoke("table", "imagenet-c", str(ln), str(dtn), "--mcnemar", "--out", str(out))
    assert code == 0, err
    assert "McNemar per corruption and severity" in printed
    tests = pd.read_csv(out / "mcnemar.csv")
    assert [(r.corruption, r.severity) for r in tests.itertuples()] == [("gaussian_noise", 1), ("gaussian_noise", 2),
                                                                       ("fog", 1), ("fog", 2)]
    a, b = C.read_run(dtn), C.read_run(ln)
    for r in tests.to_dict("records"):
        key = (r["corruption"], r["severity"])
        pa, pb = a.correct(key).tolist(), b.correct(key).tolist()
        assert r["b (model right, ref. wrong)"] == sum(1 for x, y in zip(pa, pb, strict=True) if x and not y)
        assert r["c (model wrong, ref. right)"] == sum(1 for x, y in zip(pa, pb, strict=True) if y and not x)
        assert r["test"] == "exact" and 0 < r["p"] <= 1
        assert r["significant at 0.05"] == ("significant" if r["p"] < 0.05 else "not significant")


def test_runs_without_bits_get_a_note_and_mcnemar_a_one_line_error(two, invoke):
    """An old run without bits: a note in the table, a one-line error for --mcnemar."""
    old = two["base"] / "old" / "vit_t_ln"
    shutil.copytree(two["runs"]["vit_t_ln"], old)
    shutil.rmtree(old / "correct")  # a run made before per-image data were kept
    dtn = two["runs"]["vit_t_dtn"]
    code, printed, err = invoke("table", "imagenet-c", str(old), str(dtn))
    assert code == 0, err
    assert f"no per-image data: no interval ({old})" in printed
    code, _, err = invoke("table", "imagenet-c", str(old), str(dtn), "--mcnemar")
    assert_one_line_error(code, err, "--mcnemar", "no per-image data", str(old))


def test_runs_with_different_images_get_a_note_and_mcnemar_a_one_line_error(two, invoke):
    """Runs on other images: a note naming the pairs, a one-line error for --mcnemar."""
    ln, subset = two["runs"]["vit_t_ln"], two["runs"]["subset"]
    code, printed, err = invoke("table", "imagenet-c", str(ln), str(subset))
    assert code == 0, err
    assert "different images in gaussian_noise/1, gaussian_noise/2, fog/1 and 1 more" in printed
    assert "no interval" in printed
    code, _, err = invoke("table", "imagenet-c", str(ln), str(subset), "--mcnemar")
    assert_one_line_error(code, err, "--mcnemar", "different images", str(subset), str(ln))


def test_one_model_has_no_comparison_and_bad_n_boot(two, invoke):
    """One model gives no comparison; --n-boot 0 is a one-line error."""
    ln = two["runs"]["vit_t_ln"]
    out = two["base"] / "one"
    code, printed, err = invoke("table", "imagenet-c", str(ln), "--out", str(out))
    assert code == 0, err
    assert "Paired" not in printed and not (out / "paired.md").exists()
    code, _, err = invoke("table", "imagenet-c", str(ln), str(two["runs"]["vit_t_dtn"]), "--n-boot", "0")
    assert_one_line_error(code, err, "--n-boot must be >= 1")


def test_resume_keeps_finished_bits_and_rewrites_the_rest(two):
    """A killed run keeps whole bits of its finished pair; the resumed run's bits match an uninterrupted one."""
    from dtn_bench.imagenet_c import evaluate

    out = two["base"] / "resume"

    with pytest.raises(Killed):
        evaluate("vit_t_ln", two["data"], out=out, run_id="r", on_event=kill_at("pair"), **KW)
    run = out / "imagenet-c" / "r"
    assert set(C.read_run(run).pairs) == {PAIRS[0]}  # the finished pair's bits, nothing half-written
    assert not [p for p in (run / "correct").iterdir() if p.name.startswith(".")]
    evaluate("vit_t_ln", two["data"], out=out, run_id="r", resume=True, **KW)
    done, full = C.read_run(run), C.read_run(two["runs"]["vit_t_ln"])
    for key in PAIRS:
        assert done.correct(key).tolist() == full.correct(key).tolist()


@pytest.mark.slow
def test_torchrun_gloo_two_processes_give_the_same_bits(two):
    """Two gloo processes write byte-identical bits to one process."""
    args = ["imagenet-c", "--model", "vit_t_ln", "--num-classes", "3", "--data-dir", str(two["data"]),
            "--corruptions", ",".join(CORR), "--severities", "1,2", "--batch-size", "4", "--workers", "0",
            "--device", "cpu", "--out", str(two["base"] / "dist"), "--run-id", "dist"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dtn_bench",
           *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist, single = C.read_run(two["base"] / "dist" / "imagenet-c" / "dist"), C.read_run(two["runs"]["vit_t_ln"])
    assert dist.pairs == single.pairs  # same images, same counts, same unreadable file (10 images split 5/5)
    for key in PAIRS:
        bits = [run.folder / run.pairs[key].bits for run in (dist, single)]
        assert bits[0].read_bytes() == bits[1].read_bytes()
