"""Lightning (issue 30): ``Trainer.fit``, ``validate``, ``test`` and ``predict`` on dalaug loaders.

The user's code is what they wrote for DataLoaders: a LightningDataModule whose hooks return
``dalaug.Loader(...)`` (or a Schedule's ``as_loader()``) and a LightningModule that mixes in
``training_step``; not a line of it knows dalaug is there. Lightning 2.6 hands an iterable that is
not a ``torch.utils.data.DataLoader`` on untouched: no sampler injected, no re-instantiation, no
worker check (``_prepare_dataloader`` and ``_worker_check`` in trainer/connectors/data_connector.py
return at once). What it reads off it: ``iter``, ``len``, ``dataset`` (an IterableDataset?),
``sampler``, ``batch_sampler`` and ``batch_sampler.sampler`` (is it shuffled? ``set_epoch``), and,
the loader having ``state_dict``/``load_state_dict``, its position, saved in checkpoints. These
tests hold each read to the truth, and every run to no warning at all.

Run as a script, this file is one rank of a DDP run on the CPU (gloo); Lightning's ``ddp``
launcher starts the other rank by running the same command line again:

    python tests/test_lightning.py OUT DATA
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.data import _set_sampler_epoch, has_iterable_dataset, sized_len
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.connectors.data_connector import _resolve_overfit_batches
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from lightning.pytorch.utilities.data import _is_dataloader_shuffled
from torch import nn

import dalaug

HERE = Path(__file__).parent
CROP = 32
NUM_CLASSES = 3
# Warnings true of every Lightning 2.6.6 run on torch 2.14, about neither data nor loaders: its
# CombinedLoader builds torch.utils._pytree.LeafSpec, which torch deprecates.
UNRELATED = ("`isinstance(treespec, LeafSpec)` is deprecated",)
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated:FutureWarning")
QUIET = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


# --- the user's code: written for DataLoaders, unchanged -------------------------------------------


class Classifier(pl.LightningModule):
    """A LightningModule as written for a DataLoader; ``mix`` (a batch operator) mixes in
    ``training_step``. Soft or hard targets, the loss is the same call."""

    def __init__(self, mix=None) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, NUM_CLASSES),
        )  # fmt: skip
        self.mix = mix

    def forward(self, images):
        return self.net(images)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        if self.mix is not None:
            images, targets = self.mix(images, targets)
        loss = F.cross_entropy(self(images), targets)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        self.log("val_loss", F.cross_entropy(self(images), targets), sync_dist=True)

    def test_step(self, batch, batch_idx):
        images, targets = batch
        self.log("test_loss", F.cross_entropy(self(images), targets), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Photos(pl.LightningDataModule):
    """A LightningDataModule whose hooks return dalaug loaders where DataLoaders were. The loaders
    are built in the hooks, as Lightning advises: under DDP that is after the process group is up,
    so each rank's loader reads its own shard."""

    def __init__(self, root, batch_size: int = 8) -> None:
        super().__init__()
        self.root, self.batch_size = root, batch_size

    def train_dataloader(self):
        return dalaug.Loader(self.root, self.batch_size, train=True, crop=CROP, device="cpu")

    def val_dataloader(self):
        return dalaug.Loader(self.root, 8, train=False, crop=CROP, device="cpu")

    test_dataloader = predict_dataloader = val_dataloader


class ScheduledPhotos(Photos):
    """The same, training on a Schedule: a heavy phase (AutoAugment and Mixup), then refinement on
    the clean pipeline; the schedule is closed when fitting ends."""

    schedule = None

    def train_dataloader(self):
        template = dalaug.Loader(self.root, self.batch_size, train=True, crop=CROP, device="cpu")
        mix = dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)
        heavy = dalaug.Phase(1, policy="autoaugment", operators=[mix])
        self.schedule = dalaug.Schedule(dalaug.refine(heavy, 1), template)
        return self.schedule.as_loader()

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.schedule is not None:
            self.schedule.close()


# --- the test's eyes: a callback that reads what each step got off the loader Lightning iterates ---


class Record(pl.Callback):
    """Sample ids (and the checksum of the images, and whether targets came soft) of every batch,
    per epoch and loop, read off the loader object Lightning iterates."""

    def __init__(self) -> None:
        self.train, self.val, self.sanity, self.validate, self.test, self.predict = [], [], [], [], [], []
        self.pixels, self.soft, self.policies = [], [], []
        self.iterated: dict[str, list] = {}  # per loop, the loader objects Lightning iterated

    @staticmethod
    def _loader(loop):
        return loop._combined_loader.iterables

    def _take(self, runs: list, loader, kind: str) -> None:
        runs[-1].append(loader.sample_ids.tolist())
        seen = self.iterated.setdefault(kind, [])
        if not any(loader is other for other in seen):
            seen.append(loader)

    def kinds(self) -> dict[str, list[tuple[str, str]]]:
        """Per loop, the type of each loader iterated and of its sampler."""
        return {kind: [(type(x).__name__, type(x.sampler).__name__) for x in seen]
                for kind, seen in self.iterated.items()}  # fmt: skip

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # per epoch, by number: a run resumed mid-epoch does not start that epoch again
        while len(self.train) <= trainer.current_epoch:
            self.train.append([]), self.pixels.append([]), self.soft.append([])
        self._take(self.train, trainer.train_dataloader, "train")
        self.pixels[-1].append(float(batch[0].double().sum()))
        self.soft[-1].append(batch[1].ndim == 2)
        if batch_idx == 0:  # the policy of the pipeline serving this epoch (a Schedule's phase's)
            serving = trainer.train_dataloader
            self.policies.append(getattr(serving, "loader", serving).config.policy)

    def on_validation_epoch_start(self, trainer, pl_module):
        (self.sanity if trainer.sanity_checking else self.validate if trainer.state.fn == "validate"
         else self.val).append([])  # fmt: skip

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.state.fn == "validate":
            self._take(self.validate, self._loader(trainer.validate_loop), "validate")
        else:
            runs = self.sanity if trainer.sanity_checking else self.val
            self._take(runs, self._loader(trainer.fit_loop.epoch_loop.val_loop), "val")

    def on_test_epoch_start(self, trainer, pl_module):
        self.test.append([])

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._take(self.test, trainer.test_dataloaders, "test")

    def on_predict_epoch_start(self, trainer, pl_module):
        self.predict.append([])

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._take(self.predict, trainer.predict_dataloaders, "predict")


def caught_warnings(caught) -> list[str]:
    """What was warned, less the UNRELATED; ``category: message`` each."""
    return [
        f"{w.category.__name__}: {w.message}" for w in caught
        if not any(text in str(w.message) for text in UNRELATED)
    ]  # fmt: skip


def flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


# --- what Lightning reads -------------------------------------------------------------------------


def test_what_lightning_reads_off_the_loaders_is_the_truth(photo_folder):
    train = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu")
    evaluation = dalaug.Loader(photo_folder, 8, train=False, crop=CROP, device="cpu")
    template = dalaug.Loader(photo_folder, 8, train=True, crop=CROP, device="cpu")
    with dalaug.Schedule(dalaug.refine(dalaug.Phase(1, policy="autoaugment"), 1), template) as schedule:
        phased = schedule.as_loader()
        # utilities/data.py _is_dataloader_shuffled: dataset, sampler, batch_sampler(.sampler) types
        assert _is_dataloader_shuffled(train) and _is_dataloader_shuffled(phased)
        assert not _is_dataloader_shuffled(evaluation)
        for loader, batches in ((train, 7), (evaluation, 8), (phased, 7)):
            assert not has_iterable_dataset(loader)  # a map-style data set: its len() is right
            assert sized_len(loader) == len(loader) == batches  # this rank's batches, drop_last told
            assert len(loader.batch_sampler) == batches and loader.batch_sampler.sampler.num_replicas == 1
        # the loops' _set_sampler_epoch: sampler.set_epoch and batch_sampler.sampler.set_epoch
        _set_sampler_epoch(train, 3)
        _set_sampler_epoch(phased, 1)
        assert train.epoch == 3 and phased.epoch == 1 and schedule.epoch == 1
        planned = list(train.batch_sampler)  # epoch 3's batches, named before it is served
        assert [train.sample_ids.tolist() for _ in train] == planned
        # fit_loop.py on_save_checkpoint keeps the state of a _Stateful loader in the checkpoint
        assert isinstance(train, _Stateful) and isinstance(evaluation, _Stateful)
        # Trainer(overfit_batches=...) turns shuffling off by rebuilding a DataLoader: an
        # evaluation loader needs nothing, a shuffled one cannot be rebuilt (build it with shuffle=False)
        _resolve_overfit_batches(CombinedLoader([evaluation]), RunningStage.VALIDATING)
        refused = pytest.raises(ValueError, match="needs to subclass `torch.utils.data.DataLoader`")
        with pytest.warns(UserWarning, match="enabled train dataloader shuffling"), refused:
            _resolve_overfit_batches(CombinedLoader([train]), RunningStage.TRAINING)


# --- one process -----------------------------------------------------------------------------------


class Handed(Photos):
    """Photos, keeping what its hooks handed out (the test's, not the user's)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handed = []

    def train_dataloader(self):
        self.handed.append(super().train_dataloader())
        return self.handed[-1]


def test_fit_validate_test_and_predict_on_loaders_serve_every_sample_and_warn_of_nothing(photo_folder):
    record, data = Record(), Handed(photo_folder)
    model = Classifier(mix=dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES))
    gc.collect()  # what earlier tests left behind warns (a ResourceWarning) now, not in here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = pl.Trainer(max_epochs=2, devices=1, callbacks=[record], enable_checkpointing=False, **QUIET)
        trainer.fit(model, datamodule=data)
        trainer.validate(model, datamodule=data)
        trainer.test(model, datamodule=data)
        predictions = trainer.predict(model, datamodule=data)
    assert caught_warnings(caught) == []
    # Lightning iterated the loader the hook returned, not a DataLoader rebuilt around a new sampler.
    assert record.iterated["train"] == data.handed and len(data.handed) == 1
    assert record.kinds() == {
        "train": [("Loader", "ShuffledSamplerView")],
        **{kind: [("Loader", "SequentialSamplerView")] for kind in ("val", "validate", "test", "predict")},
    }
    # Training: 7 batches of 8 per epoch (drop_last), distinct samples, a new order each epoch.
    assert [len(epoch) for epoch in record.train] == [7, 7] == [trainer.num_training_batches] * 2
    for epoch in record.train:
        assert len(set(flat(epoch))) == 56 and set(flat(epoch)) <= set(range(60))
    assert flat(record.train[0]) != flat(record.train[1])
    # Evaluation: the sanity check's 2 batches, then every sample once, in order, each time.
    assert flat(record.sanity[0]) == list(range(16))
    for runs in (record.val, record.validate, record.test, record.predict):
        assert [flat(run) for run in runs] == [list(range(60))] * len(runs) and runs
    assert len(record.val) == 2 and sum(len(p) for p in predictions) == 60


def test_a_schedule_as_a_loader_runs_its_phases_under_fit(photo_folder):
    record, data = Record(), ScheduledPhotos(photo_folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = pl.Trainer(max_epochs=2, devices=1, callbacks=[record], enable_checkpointing=False, **QUIET)
        trainer.fit(Classifier(), datamodule=data)  # the schedule mixes: the module does not
    assert caught_warnings(caught) == []
    assert record.kinds()["train"] == [("PhasedLoader", "ShuffledSamplerView")]
    assert [len(epoch) for epoch in record.train] == [7, 7]
    assert [len(set(flat(epoch))) for epoch in record.train] == [56, 56]
    assert all(all(epoch) for epoch in record.soft)  # soft targets in both phases: one loss for all
    assert data.schedule.epoch == 2  # Lightning's set_epoch calls kept the schedule's cursor
    # The heavy phase's pipeline, then the clean one (the schedule swapped the loader at the boundary).
    assert [policy is None for policy in record.policies] == [False, True]


def test_dalaug_dataloader_over_an_imagefolder_fits_as_torchs_would(photo_folder):
    """The drop-in: the DataModule's DataLoader(ImageFolder(root, transform), ...) calls with
    dalaug.DataLoader's name; Lightning reads the user's own dataset off it."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tensor = [T.ToTensor(), T.Normalize(dalaug.IMAGENET_MEAN, dalaug.IMAGENET_STD)]

    class Folders(Photos):
        def train_dataloader(self):
            train_set = ImageFolder(self.root, T.Compose([T.RandomResizedCrop(CROP), *tensor]))
            return dalaug.DataLoader(train_set, batch_size=8, shuffle=True, num_workers=2)

        def val_dataloader(self):
            val_set = ImageFolder(self.root, T.Compose([T.Resize(CROP), T.CenterCrop(CROP), *tensor]))
            return dalaug.DataLoader(val_set, batch_size=8)

    record = Record()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = pl.Trainer(max_epochs=1, devices=1, callbacks=[record], enable_checkpointing=False, **QUIET)
        model = Classifier(dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES))
        trainer.fit(model, datamodule=Folders(photo_folder))
    assert caught_warnings(caught) == []
    shuffled, sequential = [("Loader", "ShuffledSamplerView")], [("Loader", "SequentialSamplerView")]
    assert record.kinds() == {"train": shuffled, "val": sequential}
    assert isinstance(record.iterated["train"][0].dataset, ImageFolder)
    assert [len(epoch) for epoch in record.train] == [8] and sorted(flat(record.train[0])) == list(range(60))
    assert [flat(run) for run in record.val] == [list(range(60))]


def test_a_shuffled_evaluation_loader_gets_lightnings_warning(photo_folder):
    class Shuffled(Photos):
        def val_dataloader(self):
            return dalaug.Loader(self.root, 8, shuffle=True, crop=CROP, device="cpu")

    with pytest.warns(UserWarning, match="val_dataloader`'s sampler has shuffling enabled"):
        pl.Trainer(devices=1, **QUIET).validate(Classifier(), datamodule=Shuffled(photo_folder))


def _fit_checkpointing(datamodule, tmp_path, record, keep, **fit_options):
    """Two epochs, a checkpoint every 3 steps (``keep`` of them), batches seen by ``record``."""
    checkpoints = ModelCheckpoint(tmp_path, "{epoch}-{step}", every_n_train_steps=3, save_top_k=keep)
    trainer = pl.Trainer(max_epochs=2, devices=1, callbacks=[record, checkpoints], limit_val_batches=0,
                         **QUIET)  # fmt: skip
    trainer.fit(Classifier(), datamodule=datamodule, **fit_options)


def test_a_checkpoint_saved_mid_epoch_resumes_at_the_next_batch(photo_folder, tmp_path):
    # Lightning keeps the loader's state_dict in its checkpoints (fit_loop.py on_save_checkpoint)
    # and hands it back on resuming: the run goes on with the batch after the checkpoint.
    def fit(record, keep, **fit_options):
        _fit_checkpointing(Photos(photo_folder), tmp_path, record, keep, **fit_options)

    whole, resumed = Record(), Record()
    fit(whole, keep=-1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(resumed, keep=0, ckpt_path=tmp_path / "epoch=0-step=3.ckpt")  # (0: keeps those of the whole run)
    assert caught_warnings(caught) == []
    assert resumed.train == [whole.train[0][3:], whole.train[1]]
    assert resumed.pixels == [whole.pixels[0][3:], whole.pixels[1]]  # the same crops, to the pixel


def test_a_schedule_resumes_mid_epoch_at_the_next_batch(photo_folder, tmp_path):
    def fit(record, keep, **fit_options):
        _fit_checkpointing(ScheduledPhotos(photo_folder), tmp_path, record, keep, **fit_options)

    whole, resumed = Record(), Record()
    fit(whole, keep=-1)
    fit(resumed, keep=0, ckpt_path=tmp_path / "epoch=0-step=3.ckpt")
    assert resumed.train == [whole.train[0][3:], whole.train[1]]
    assert resumed.pixels == [whole.pixels[0][3:], whole.pixels[1]]


# --- DDP: two ranks on the CPU ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp(photo_folder, tmp_path_factory):
    """This file run as a script (see ddp_rank), Lightning's launcher starting rank 1: the
    completed process and the folder the ranks wrote to."""
    out = tmp_path_factory.mktemp("ddp")
    outer = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")  # not ours
    env = {name: value for name, value in os.environ.items() if name not in outer}
    root = str(HERE.parent)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")])))
    command = [sys.executable, str(Path(__file__).resolve()), str(out), str(photo_folder)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=out)
    return result, out


def test_ddp_on_two_cpu_ranks_shards_without_a_distributed_sampler(ddp):
    """strategy="ddp": Lightning would put a DistributedSampler into a DataLoader (it is
    distributed, use_distributed_sampler=True); a dalaug loader it leaves as the hook returned it,
    and each rank's loader reads its own half of every epoch."""
    result, out = ddp
    assert all((out / f"rank{r}.json").exists() for r in range(2)), result.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    for rank, report in enumerate(ranks):
        assert report["warnings"] == [], rank
        for name in ("loader", "schedule"):
            run = report[name]
            assert run["distributed"] == [True, True]  # Lightning would replace a DataLoader's sampler
            assert run["shard"] == [2, rank]
            assert run["kinds"]["train"] == [["PhasedLoader" if name == "schedule" else "Loader",
                                              "ShuffledSamplerView"]]  # fmt: skip
            assert run["kinds"]["val"] == [["Loader", "SequentialSamplerView"]]
        assert report["loader"]["kinds"]["test"] == [["Loader", "SequentialSamplerView"]]
        assert all(all(epoch) for epoch in report["schedule"]["soft"])
        assert report["schedule"]["clean"] == [False, True]  # AutoAugment, then the clean pipeline
    for name in ("loader", "schedule"):
        one, other = ranks[0][name], ranks[1][name]
        for epoch in range(2):  # 30 samples per rank: 6 batches of 5 each, the halves of all 60
            assert [len(one["train"][epoch]), len(other["train"][epoch])] == [6, 6]
            assert sorted(flat(one["train"][epoch]) + flat(other["train"][epoch])) == list(range(60))
        assert flat(one["train"][0]) != flat(one["train"][1])
        runs = ("sanity", "val", "validate", "test") if name == "loader" else ("sanity", "val")
        for kind in runs:
            assert len(one[kind]) == len(other[kind]) >= 1, (name, kind)
            for mine, theirs in zip(one[kind], other[kind], strict=True):
                if kind == "sanity":  # Lightning's 2 batches on each rank
                    assert len(mine) == len(theirs) == 2
                else:  # every sample once across the ranks, each rank's in order
                    assert sorted(flat(mine) + flat(theirs)) == list(range(60)), (name, kind)
                    assert flat(mine) == sorted(flat(mine))


def test_ddp_resumes_a_mid_epoch_checkpoint_on_every_rank(ddp):
    """Lightning writes rank 0's loader state into the checkpoint (only rank 0 saves) and hands it
    to every rank on resuming: each goes on with the samples of the epoch not yet served."""
    result, out = ddp
    assert result.returncode == 0, result.stderr[-4000:]
    whole = [json.loads((out / f"rank{r}.json").read_text())["loader"]["train"] for r in range(2)]
    resumed = [json.loads((out / f"resumed{r}.json").read_text()) for r in range(2)]
    assert [report["warnings"] for report in resumed] == [[], []]
    served = flat(whole[0][0][:3]) + flat(whole[1][0][:3])  # before the checkpoint at step 3
    rest = [report["train"] for report in resumed]
    assert [len(rest[0][0]), len(rest[1][0])] == [3, 3]
    assert sorted(served + flat(rest[0][0]) + flat(rest[1][0])) == list(range(60))
    assert sorted(flat(rest[0][1]) + flat(rest[1][1])) == list(range(60))


def ddp_rank(out: str, root: str) -> None:
    """One rank of the DDP run of the test_ddp_ tests: fit (saving checkpoints), validate and test
    on Photos, then fit on ScheduledPhotos, writing what the loaders served to OUT/rank<r>.json;
    then a fit resumed from the first run's checkpoint at step 3, to OUT/resumed<r>.json."""
    out = Path(out)

    def trainer(*callbacks, **options):
        return pl.Trainer(max_epochs=2, devices=2, strategy="ddp", callbacks=[*callbacks], **options, **QUIET)

    def checkpoints(keep):
        return ModelCheckpoint(out / "checkpoints", "{epoch}-{step}", every_n_train_steps=3, save_top_k=keep)

    report = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, data, mix in (
            ("loader", Photos(root, batch_size=5), dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)),
            ("schedule", ScheduledPhotos(root, batch_size=5), None),
        ):
            record, model = Record(), Classifier(mix)
            if name == "loader":
                fitting = trainer(record, checkpoints(-1))
            else:
                fitting = trainer(record, enable_checkpointing=False)
            fitting.fit(model, datamodule=data)
            if name == "loader":
                fitting.validate(model, datamodule=data)
                fitting.test(model, datamodule=data)
            sampler = record.iterated["train"][0].sampler
            connector = fitting._accelerator_connector
            report[name] = {
                "distributed": [connector.use_distributed_sampler, connector.is_distributed],
                "shard": [sampler.num_replicas, sampler.rank],
                "kinds": record.kinds(),
                "clean": [policy is None for policy in record.policies],
                **{kind: getattr(record, kind) for kind in ("train", "soft", "sanity", "val", "validate")},
                "test": record.test,
            }
    report["warnings"] = caught_warnings(caught)
    rank = torch.distributed.get_rank()
    (out / f"rank{rank}.json").write_text(json.dumps(report))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = Record()
        resuming = trainer(record, checkpoints(0), limit_val_batches=0)
        resuming.fit(Classifier(dalaug.Mixup(alpha=1.0, num_classes=NUM_CLASSES)), datamodule=Photos(root, 5),
                     ckpt_path=out / "checkpoints" / "epoch=0-step=3.ckpt")  # fmt: skip
    resumed = {"train": record.train, "warnings": caught_warnings(caught)}
    (out / f"resumed{rank}.json").write_text(json.dumps(resumed))


if __name__ == "__main__":
    ddp_rank(*sys.argv[1:3])
