"""The test set of a robustness study: the clean test split and its corruption set, released or generated.

:func:`plan_test_set` checks everything before any work (the training set's layout, a ``--corrupt-dir``'s layout,
its classes) and says where each file will be; :func:`write_test_set` is the ``corrupt-data`` stage: it writes the
clean test split as arrays and, without ``--corrupt-dir``, generates the corruption set from it with the existing
generator (``dtn-bench corrupt --format ...``), all under ``<run>/corrupt-data/``:

- ``clean-images.npy`` / ``clean-labels.npy``: the test split (``uint8 [N, S, S, 3]``, ``int64 [N]``) at the set's
  size ``S`` (CIFAR as is; Tiny-ImageNet decoded; the 8 x 8 digits upscaled to 32 px bilinear, which is what the
  small models' evaluation transform does, so the clean error equals the training run's last validation error);
  ImageNet's clean set is its ``val/`` folder, read by the ImageNet-C evaluation itself;
- ``<format>/``: the generated set (CIFAR formats: ``<corruption>.npy`` + ``labels.npy`` from the clean arrays;
  Tiny-ImageNet-C and ImageNet-C: the folder layout from ``test-split/<wnid>/<image>``, links to the test images
  (Tiny-ImageNet's val is not foldered by class), or from ImageNet's ``val/``), with the generator's manifest
  ``dtn-bench-corrupt.json``.

A set with that manifest (generated here, or given as ``--corrupt-dir``) is labelled generated in rows and tables; the
digits / demo sets have no released corruption set and are always generated ("not CIFAR").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtn_bench.errors import DTNBenchError
from dtn_bench.robustness.config import RobustnessConfig, Target

FOLDER = "corrupt-data"
CLEAN_IMAGES, CLEAN_LABELS = "clean-images.npy", "clean-labels.npy"
SPLIT_LINKS = "test-split"
DESCRIPTIONS = {
    "digits": "the scikit-learn 8x8 digits test split upscaled to 32 px; not CIFAR",
    "demo": "the procedural demo patterns' test split; not real images, not CIFAR",
}


@dataclass(frozen=True)
class TestSet:
    """Where the clean and corrupted test images are, and what tables call them.

    Attributes:
        target: what the training set is tested on.
        label: the data as rows and tables name it (``CIFAR-10-C``; ``digits-C, generated ...``).
        generated: written by ``dtn-bench corrupt`` (here or earlier), not the released set.
        corrupt_dir: the corruption set's folder; ``None``: generated into ``<run>/corrupt-data/<format>``.
        clean_dir: ImageNet's clean ``val/`` folder (``None`` for the array sets).
        classes: the classes of the test set.
        images: its clean test images.
        source: the training set's folder (``None`` for the built-in sets).
        gen_seed: the seed of a generated set.
        corruptions: corruption names.
        severities: severities.
    """

    target: Target
    label: str
    generated: bool
    corrupt_dir: str | None
    clean_dir: str | None
    classes: int
    images: int
    source: str | None
    gen_seed: int
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]

    def corrupt_path(self, run_dir: Path) -> Path:
        """The corruption set's folder."""
        return Path(self.corrupt_dir) if self.corrupt_dir else Path(run_dir) / FOLDER / self.target.format

    def clean_arrays(self, run_dir: Path) -> tuple[Path, Path] | None:
        """``(images, labels)`` ``.npy`` of the clean test split (``None`` for ImageNet: its ``val/`` folder)."""
        if self.target.evaluation == "imagenet":
            return None
        return Path(run_dir) / FOLDER / CLEAN_IMAGES, Path(run_dir) / FOLDER / CLEAN_LABELS


def _data(cfg: RobustnessConfig):
    from dtn_bench.train.data import load_data

    return load_data(cfg.dataset, cfg.data_dir)


def _generator_manifest(folder: Path) -> dict | None:
    from dtn_bench.checks import read_json_object
    from dtn_bench.data.corruptions.job import MANIFEST_NAME

    path = folder / MANIFEST_NAME
    return read_json_object(path, "the dtn-bench corrupt manifest ") if path.is_file() else None


def _check_corrupt_dir(cfg: RobustnessConfig, root: Path, classes: int) -> None:
    """The layout of a given corruption set (headers and folders only), one-line errors naming ``--corrupt-dir``."""
    from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities

    target = cfg.target
    corruptions, severities = resolve_corruptions(cfg.corruptions), resolve_severities(cfg.severities)
    try:
        if target.layout == "arrays":
            from dtn_bench.cifar_c.data import check_arrays

            check_arrays(root, corruptions, target.evaluation, classes)
        elif target.evaluation == "tiny-imagenet":
            from dtn_bench.cifar_c.data import folder_sources

            folder_sources(root, corruptions, severities, target.evaluation, classes)
        else:
            from dtn_bench.imagenet_c.data import scan_layout

            if not root.is_dir():
                raise DTNBenchError(f"--data-dir {root} does not exist or is not a folder")
            layout = scan_layout(root, corruptions, severities)
            if len(layout.classes) != classes:
                raise DTNBenchError(f"ImageNet-C under {root} has {len(layout.classes)} class folders, the training "
                                    f"set {classes}")
    except DTNBenchError as e:
        raise DTNBenchError(f"--corrupt-dir: {e}".replace("--data-dir ", "")) from None


def plan_test_set(cfg: RobustnessConfig) -> TestSet:
    """Check the training set (its test split) and a given ``--corrupt-dir``; say where everything will be.

    Raises:
        DTNBenchError: a missing or malformed training set, a ``--corrupt-dir`` of the wrong layout (naming what is
            missing), or one for a set that has no released version without the generator's manifest.
    """
    target = cfg.target
    data = _data(cfg)
    generated, corrupt_dir = True, None
    if cfg.corrupt_dir is not None:
        root = Path(cfg.corrupt_dir).expanduser().resolve()
        if not root.is_dir():
            raise DTNBenchError(f"--corrupt-dir {root} {'is not a folder' if root.exists() else 'does not exist'} "
                                f"({target.label})")
        _check_corrupt_dir(cfg, root, data.classes)
        generated = _generator_manifest(root) is not None
        if not generated and not target.released:
            raise DTNBenchError(f"--corrupt-dir {root}: {target.label} has no released set; give a folder that "
                                f"dtn-bench corrupt --format {target.format} wrote (it has dtn-bench-corrupt.json), "
                                "or leave --corrupt-dir out to generate it")
        corrupt_dir = str(root)
    clean_dir = None
    if target.evaluation == "imagenet":
        clean_dir = str(Path(cfg.data_dir).expanduser().resolve() / "val")
    return TestSet(target, _label(cfg, target, generated), generated, corrupt_dir, clean_dir, data.classes,
                   len(data.val), cfg.data_dir, cfg.gen_seed, tuple(cfg.corruptions), tuple(cfg.severities))


def _label(cfg: RobustnessConfig, target: Target, generated: bool) -> str:
    if not generated:
        return target.label
    about = DESCRIPTIONS.get(target.dataset, f"the {target.dataset} test split")
    return f"{target.label}, generated by dtn-bench corrupt --format {target.format} from {about}"


# ------------------------------------------------------------------------------------------------------------------
# the corrupt-data stage
def _clean_arrays(data, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The test split as ``uint8 [N, size, size, 3]`` (resized bilinear where it is another size) and its labels."""
    from PIL import Image

    split = data.val
    out = np.empty((len(split), size, size, 3), dtype=np.uint8)
    for i in range(len(split)):
        image = split.image(i)
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(image, dtype=np.uint8)
    return out, np.asarray(split.labels, dtype=np.int64)


def _save(path: Path, array: np.ndarray) -> None:
    import io

    from dtn_bench.results.writer import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _link_split(data, root: Path) -> Path:
    """``root/<class>/<name>`` links to the test images (a folder the folder generator reads)."""
    for path, label in zip(data.val.paths, data.val.labels.tolist(), strict=True):
        link = root / data.class_names[label] / Path(path).name
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.abspath(path), link)
    return root


def _complete(folder: Path, test: TestSet, source: str) -> bool:
    """The generator's manifest says the set in ``folder`` is complete for this source, seed and corruptions."""
    done = _generator_manifest(folder)
    return (done is not None and done.get("source") == source and done.get("seed") == test.gen_seed
            and sorted(done.get("corruptions", [])) == sorted(test.corruptions))


def write_test_set(test: TestSet, run_dir: Path, device: str = "cpu", progress=None) -> int:
    """The ``corrupt-data`` stage: clean arrays, then (without ``--corrupt-dir``) the generated corruption set.

    Continues an interrupted stage: arrays already written are kept, the generator continues its own job (a set
    whose manifest says it is complete for this source, seed and corruptions is kept as it is).

    Returns:
        The clean test images.
    """
    from dtn_bench.train.data import load_data

    data = load_data(test.target.dataset, test.source)
    folder = Path(run_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    clean = test.clean_arrays(run_dir)
    if clean is not None and not (clean[0].is_file() and clean[1].is_file()):
        images, labels = _clean_arrays(data, test.target.size)
        _save(clean[1], labels)
        _save(clean[0], images)
    if test.corrupt_dir is None:
        _generate(test, data, run_dir, device, progress)
    return len(data.val)


def _generate(test: TestSet, data, run_dir: Path, device: str, progress) -> None:
    out = test.corrupt_path(run_dir)
    fmt = test.target.format
    if test.target.layout == "arrays":
        from dtn_bench.cifar_c.generate import corrupt_arrays

        images, labels = test.clean_arrays(run_dir)
        source = f"{images.resolve()} ({fmt})"
        if not _complete(out, test, source):
            corrupt_arrays(images, out, fmt, test.corruptions, labels=labels, seed=test.gen_seed, device=device,
                           progress=progress)
        return
    from dtn_bench.cifar_c.generate import resolve_format
    from dtn_bench.data.corruptions import corrupt_folder

    src = (_link_split(data, Path(run_dir) / FOLDER / SPLIT_LINKS) if test.target.evaluation == "tiny-imagenet"
           else Path(test.clean_dir))
    if not _complete(out, test, str(src.resolve())):
        corrupt_folder(src, out, test.corruptions, test.severities, seed=test.gen_seed, device=device,
                       progress=progress, recipe=resolve_format(fmt))
