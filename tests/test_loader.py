"""The Loader as a DataLoader replacement: shapes, labels, epochs, shards, determinism, errors."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest
import torch
from data_colours import CLASS_COLOURS
from torchvision.datasets import ImageFolder

import dalaug
from dalaug.feed import EpochFeed, Sharding
from dalaug.loader import DecodeError
from dalaug.reading.sources import resolve_source

CROP = 32


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [(x, y, loader.sample_ids.clone()) for x, y in loader]


def denormalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(dalaug.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dalaug.IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() * std + mean) * 255


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_batches_have_dataloader_shapes_and_dtypes(photo_folder, dtype):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", dtype=dtype)
    images, targets = next(iter(loader))
    assert images.shape == (8, 3, CROP, CROP) and images.dtype == dtype
    assert targets.shape == (8,) and targets.dtype == torch.int64
    assert images.device == loader.device == torch.device("cpu")
    pixels = denormalize(images)
    # normalized with ImageNet statistics: back on the 0-255 scale the values are pixels
    assert pixels.min() >= -1 and pixels.max() <= 256 and pixels.std() > 10


def test_classes_and_order_match_torchvision_image_folder(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu")
    reference = ImageFolder(photo_folder)
    assert loader.classes == reference.classes
    assert [(p, int(y)) for p, y in zip(loader.samples.paths, loader.samples.labels, strict=True)] == [
        (str(p), y) for p, y in reference.samples
    ]


def test_targets_match_the_class_folders(colour_folder):
    loader = dalaug.Loader(colour_folder, 4, train=True, crop=CROP, device="cpu", policy=None)
    colours = torch.tensor(CLASS_COLOURS, dtype=torch.float32)
    for images, targets in loader:
        mean_colour = denormalize(images).mean(dim=(2, 3))
        nearest = torch.cdist(mean_colour, colours).argmin(dim=1)
        assert torch.equal(nearest, targets)


def test_train_epoch_drops_last_partial_batch_without_repeats(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu")
    assert len(loader) == 60 // 8
    for _ in range(2):
        ids = torch.cat([i for _, _, i in batches(loader)])
        assert len(ids) == len(loader) * 8 and len(set(ids.tolist())) == len(ids)


def test_eval_epoch_delivers_every_sample_exactly_once(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device="cpu")
    assert len(loader) == 8  # ceil(60 / 8)
    for _ in range(2):
        out = batches(loader)
        assert len(out) == len(loader) and out[-1][0].shape[0] == 60 - 7 * 8
        assert sorted(torch.cat([i for _, _, i in out]).tolist()) == list(range(60))
        targets = torch.cat([y for _, y, _ in out])
        ids = torch.cat([i for _, _, i in out])
        assert torch.equal(targets, torch.as_tensor(loader.samples.labels)[ids])


def test_epochs_reshuffle_and_set_epoch_replays_an_epoch(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=3)
    first = torch.cat([i for _, _, i in batches(loader)])
    second = torch.cat([i for _, _, i in batches(loader)])
    assert not torch.equal(first, second)
    loader.set_epoch(0)
    assert torch.equal(torch.cat([i for _, _, i in batches(loader)]), first)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("lockstep", [True, False])
def test_shards_cover_the_data_set(world_size, lockstep):
    # Training (and lockstep evaluation) pads to equal shards; plain evaluation counts each sample once.
    samples = resolve_source([(__file__, i % 5) for i in range(50)])
    feeds = [
        EpochFeed(samples, 4, shuffle=lockstep, drop_last=lockstep, seed=1, sharding=Sharding(r, world_size))
        for r in range(world_size)
    ]
    for epoch in range(3):
        shards = [feed.shard(epoch) for feed in feeds]
        everything = np.concatenate(shards)
        assert set(everything.tolist()) == set(range(50))
        assert [len(shard) for shard in shards] == [feed.num_samples() for feed in feeds]
        if lockstep:
            assert len({len(s) for s in shards}) == 1 and len({feed.num_batches() for feed in feeds}) == 1
            assert len(everything) - 50 == (-50) % world_size  # duplicates only from the padding
        else:
            assert len(everything) == 50 and max(map(len, shards)) - min(map(len, shards)) <= 1


def test_same_seed_same_batches_different_seed_differs(photo_folder):
    def run(seed):
        loader = dalaug.Loader(
            photo_folder, 8, train=True, crop=CROP, device="cpu", seed=seed, policy="randaugment"
        )
        return batches(loader)

    a, b, c = run(5), run(5), run(6)
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert not all(torch.equal(xa, xc) for (xa, _, _), (xc, _, _) in zip(a, c, strict=True))


def write_shards(folder, root, count: int = 2, reverse: bool = False) -> None:
    """``folder``'s samples as ``count`` WebDataset shards in ``root`` (each in reverse order if asked)."""
    for shard_index in range(count):
        path = root / f"shard-{shard_index}.tar"
        ids = list(range(shard_index, len(folder), count))
        with tarfile.open(root / "partial.tar", "w") as tar:
            for i in reversed(ids) if reverse else ids:
                key = f"sample{i:04d}"
                tar.add(folder.paths[i], arcname=f"{key}.jpg")
                label = root / "label.cls"
                label.write_text(str(int(folder.labels[i])))
                tar.add(label, arcname=f"{key}.cls")
        os.replace(root / "partial.tar", path)
        (root / "label.cls").unlink()


def test_webdataset_shards_read_like_a_folder(colour_folder, tmp_path):
    folder = resolve_source(colour_folder)
    write_shards(folder, tmp_path)
    loader = dalaug.Loader(tmp_path, 4, train=False, crop=CROP, device="cpu")
    assert loader.num_samples == len(folder)
    colours = torch.tensor(CLASS_COLOURS, dtype=torch.float32)
    for images, targets in loader:
        nearest = torch.cdist(denormalize(images).mean(dim=(2, 3)), colours).argmin(dim=1)
        assert torch.equal(nearest, targets)


def test_a_shard_rewritten_under_the_loader_is_named_not_its_samples(photo_folder, tmp_path):
    folder = resolve_source(photo_folder)
    write_shards(folder, tmp_path)
    loader = dalaug.Loader(tmp_path, 8, train=False, crop=CROP, device="cpu", max_bad_fraction=0.5)
    assert sum(len(y) for _, y in loader) == 60
    write_shards(folder, tmp_path, reverse=True)  # the same samples at other offsets
    with pytest.raises(DecodeError, match=r"shard-\d.tar: rewritten after it was indexed.*index it anew"):
        for _ in range(3):
            for _ in loader:
                pass


def test_with_options_builds_the_clean_variant_over_the_same_samples(photo_folder):
    heavy = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", policy="autoaugment")
    clean = heavy.with_options(policy=None)
    assert clean.config.policy is None and clean.samples is heavy.samples and len(clean) == len(heavy)


def test_with_options_to_the_other_kind_of_loader_is_what_its_constructor_makes(photo_folder):
    heavy = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", policy="autoaugment",
                          scale=(0.5, 1.0), num_workers=1, operators=[dalaug.Mixup(1.0)])  # fmt: skip
    made = dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device="cpu", num_workers=1)
    evaluation = heavy.with_options(train=False)
    assert evaluation.config == made.config and not evaluation.operators  # in order, every sample, no mixing
    heavy = heavy.with_options(operators=[])
    assert made.with_options(train=True, policy="autoaugment", scale=(0.5, 1.0)).config == heavy.config
    assert heavy.with_options(num_workers=2, prefetch_factor=3, pin_memory=True).config.num_threads == 2
    with pytest.raises(ValueError, match="resize: .*evaluation loader"):
        heavy.with_options(resize=64)


def test_options_given_in_any_sequence_and_any_seed_are_taken(photo_folder):
    seed = 1_733_000_000_000_000_000  # time.time_ns()
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=seed,
                           mean=np.array([0.5, 0.5, 0.5]), std=[0.25, 0.25, 0.25])  # fmt: skip
    assert loader.config.mean == (0.5, 0.5, 0.5) and loader.config.std == (0.25, 0.25, 0.25)
    images, _ = next(iter(loader))
    assert images.shape == (8, 3, CROP, CROP)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 8, "crop": 0}, "crop"),
        ({"batch_size": 8, "crop": -3}, "crop"),
        ({"batch_size": 8, "policy": "autoaugmnt"}, "policy"),
        ({"batch_size": 8, "mean": (0.5, 0.5)}, "mean"),
        ({"batch_size": 8, "mean": (124, 116, 104)}, "mean"),
        ({"batch_size": 8, "std": (0.2, 0.0, 0.2)}, "std"),
        ({"batch_size": 8, "std": (58.4, 57.1, 57.4)}, "std: .*0-1 pixel scale"),  # the 0-255 scale
        ({"batch_size": 8, "mean": "abc"}, "mean: expected 3 per-channel numbers"),
        ({"batch_size": 8, "resize": 256}, "resize: .*evaluation loader"),
        ({"batch_size": 8, "train": False, "scale": (0.5, 1.0)}, "scale: .*training loader"),
        ({"batch_size": 8, "train": False, "ratio": (0.5, 2.0)}, "ratio: .*training loader"),
        ({"batch_size": 8, "train": False, "flip": True}, "flip: an evaluation loader"),
        ({"batch_size": 8, "scale": (0.5, 0.1)}, "scale"),
        ({"batch_size": 8, "train": False, "policy": "autoaugment"}, "policy"),
        ({"batch_size": 8, "dtype": torch.int32}, "dtype"),
        ({"batch_size": 8, "device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_are_named(photo_folder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dalaug.Loader(photo_folder, **{"train": True, **kwargs})


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dalaug.Loader(tmp_path / "missing", 8, train=True)
    with pytest.raises(ValueError, match="is empty"):
        dalaug.Loader(tmp_path, 8, train=True)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no class folders"):
        dalaug.Loader(tmp_path, 8, train=True)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        dalaug.Loader(tmp_path, 8, train=True)


def test_a_class_folder_without_images_is_refused_as_it_would_shift_the_labels(photo_folder, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(photo_folder, root)
    (root / ".ipynb_checkpoints").mkdir()  # sorts first: every real class would move up by one
    with pytest.raises(ValueError, match=r"class folders \['.ipynb_checkpoints'\] .* hold no image files"):
        dalaug.Loader(root, 8, train=True)


def test_a_file_that_fails_to_decode_is_named(colour_folder, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(colour_folder, root)
    bad = root / "c1" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg" * 10)
    loader = dalaug.Loader(root, 4, crop=CROP, device="cpu", train=False)
    with pytest.raises(RuntimeError, match="broken.jpg"):
        for _ in loader:
            pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("roi_decode", [True, False])
def test_gpu_pipeline_matches_cpu_pipeline(photo_folder, roi_decode):
    def run(device):
        loader = dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device=device, roi_decode=roi_decode)
        return [(x.cpu(), y.cpu()) for x, y in loader], loader.device

    cpu, _ = run("cpu")
    gpu, device = run("cuda")
    assert device.type == "cuda"
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert torch.equal(yc, yg)
        # nvJPEG and libjpeg-turbo may differ by a grey level or two in places
        assert (xc - xg).abs().mean() < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy", [None, "autoaugment", "randaugment", "trivialaugment"])
@pytest.mark.parametrize("roi_decode", [True, False])
def test_gpu_train_pipeline_yields_cuda_tensors(photo_folder, policy, roi_decode):
    loader = dalaug.Loader(
        photo_folder, 8, train=True, crop=CROP, device="cuda", policy=policy, roi_decode=roi_decode
    )
    images, targets = next(iter(loader))
    assert images.is_cuda and targets.is_cuda and images.shape == (8, 3, CROP, CROP)


def test_an_epoch_broken_off_is_followed_by_a_whole_next_epoch(photo_folder):
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=2)
    reference = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=2)
    reference.set_epoch(1)
    for _ in loader:
        break
    ids = torch.cat([i for _, _, i in batches(loader)])
    assert torch.equal(ids, torch.cat([i for _, _, i in batches(reference)]))


def test_prepare_starts_an_epoch_early_without_changing_it(photo_folder):
    reference = dalaug.Loader(
        photo_folder, 8, train=True, crop=CROP, device="cpu", seed=4, policy="randaugment"
    )
    reference.set_epoch(2)
    expected = batches(reference)
    loader = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu", seed=4, policy="randaugment")
    loader.prepare(2)
    loader.set_epoch(2)  # a loop's usual call keeps the prepared epoch
    for (x, y, i), (xe, ye, ie) in zip(batches(loader), expected, strict=True):
        assert torch.equal(i, ie) and torch.equal(y, ye) and torch.equal(x, xe)
    loader.prepare(5)
    loader.set_epoch(3)  # another epoch: the prepared one is dropped
    reference.set_epoch(3)
    ids = torch.cat([i for _, _, i in batches(loader)])
    assert torch.equal(ids, torch.cat([i for _, _, i in batches(reference)]))
