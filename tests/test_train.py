"""The training entry point: a DataLoader-style loop, learning, resume, DDP, the plot, CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_colours import write_colour_folder

import dalaug
from train.__main__ import main

REPO = Path(__file__).resolve().parent.parent
RECIPE = """
import dalaug
from train.recipe import Recipe

mixup = dalaug.Mixup(alpha=1.0, num_classes=4)
heavy = dalaug.Phase({heavy}, policy="randaugment", operators=[mixup], name="heavy")
recipe = Recipe(
    name="tiny", model="preact_resnet18", model_kwargs={{"width": 4}}, data={data!r},
    crop=16, eval_resize=16, scale=(0.5, 1.0), flip=False, batch_size=8, lr=0.05,
    phases=dalaug.refine(heavy, epochs={refine}), lr_schedule="step", milestones=({milestone},),
    gap_samples=16, seed=0,
)
"""


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour_data")
    write_colour_folder(root / "train", per_class=6, size=24)
    write_colour_folder(root / "val", per_class=2, size=24)
    return root


def write_recipe(tmp_path: Path, data: Path, heavy: int = 3, refine: int = 1) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(RECIPE.format(data=str(data), heavy=heavy, refine=refine, milestone=heavy))
    return path


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_dataloader_style_imagenet_loop_runs_unchanged(colour_data):
    # The shape of pytorch/examples' imagenet/main.py train(): only the loader line differs.
    train_loader = dalaug.Loader(colour_data / "train", 8, train=True, crop=16, device="cpu")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    steps = 0
    for _epoch in range(2):
        for i, (images, target) in enumerate(train_loader):
            images, target = images.to("cpu", non_blocking=True), target.to("cpu", non_blocking=True)
            loss = criterion(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            assert i < len(train_loader)
    assert steps == 2 * len(train_loader) == 2 * (24 // 8)


def test_training_lowers_the_loss_and_writes_metrics_and_a_png(colour_data, tmp_path):
    out = tmp_path / "run"
    assert (
        main(["--recipe", str(write_recipe(tmp_path, colour_data)), "--out", str(out), "--device", "cpu"])
        == 0
    )
    records = history(out)
    assert [r["phase"] for r in records] == ["heavy"] * 3 + ["refine"]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    # Held-out loss falls (12 steps are too few for an accuracy threshold that holds for every seed).
    assert records[-1]["test_loss"] < records[0]["test_loss"] and 0 <= records[-1]["top1"] <= 100
    assert {"clean_train_loss", "augmented_train_loss", "test_loss", "top5"} <= records[-1].keys()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == "tiny" and config["batch_size"] == 8


def test_sigkill_mid_epoch_then_resume_reaches_the_weights_of_an_uninterrupted_run(colour_data, tmp_path):
    recipe = write_recipe(tmp_path, colour_data, heavy=2, refine=2)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # Every run in a fresh process: the same thread count and no state left by other tests.
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def train(out: Path, *extra: str) -> subprocess.Popen:
        command = [
            sys.executable,
            "-m",
            "train",
            "--recipe",
            str(recipe),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
        return subprocess.Popen(command + list(extra), cwd=REPO, env=env, stdout=subprocess.DEVNULL)

    assert train(whole).wait(timeout=300) == 0
    process = train(killed)
    metrics = killed / "metrics.jsonl"
    deadline = time.monotonic() + 240
    # Kill during epoch 1: after epoch 0's checkpoint, before epoch 1's.
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epochs_done = metrics.read_text().count("\n")
    assert 1 <= epochs_done < 4, "the run must be killed before it finished"
    assert train(killed, "--resume").wait(timeout=300) == 0
    ours = torch.load(killed / "checkpoint.pt", weights_only=False)["model"]
    theirs = torch.load(whole / "checkpoint.pt", weights_only=False)["model"]
    for name in theirs:
        assert torch.allclose(ours[name].float(), theirs[name].float(), atol=1e-5), name
    assert [r["phase"] for r in history(killed)] == ["heavy", "heavy", "refine", "refine"]
    assert [r["epoch"] for r in history(killed)] == [0, 1, 2, 3]
    before = [r["train_loss"] for r in history(whole)]
    assert [r["train_loss"] for r in history(killed)] == pytest.approx(before, rel=1e-5)


@pytest.mark.parametrize("stop", [1, 2, 3])
def test_resume_after_any_epoch_reaches_the_weights_of_an_uninterrupted_run(colour_data, tmp_path, stop):
    from train.loop import Trainer
    from train.recipe import load_recipe

    recipe = write_recipe(tmp_path, colour_data, heavy=2, refine=2)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    Trainer(load_recipe(recipe), whole, device="cpu").run()
    Trainer(load_recipe(recipe), stopped, device="cpu").run(until=stop)  # a job that ran out of time
    Trainer(load_recipe(recipe), stopped, device="cpu", resume=True).run()
    ours = torch.load(stopped / "checkpoint.pt", weights_only=False)["model"]
    theirs = torch.load(whole / "checkpoint.pt", weights_only=False)["model"]
    for name in theirs:
        assert torch.allclose(ours[name].float(), theirs[name].float(), atol=1e-5), name


def test_two_process_torchrun_trains_each_rank_on_its_shard(colour_data, tmp_path):
    out = tmp_path / "ddp"
    recipe = write_recipe(tmp_path, colour_data, heavy=1, refine=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
               "-m", "train", "--recipe", str(recipe), "--out", str(out), "--device", "cpu"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = history(out)
    assert len(records) == 2  # rank 0 alone writes
    # 24 training images, batch 8 per rank: each rank has 12 samples -> 1 full batch per epoch
    assert records[0]["images_per_s"] > 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--data", "/nonexistent/data"], "--data"),
        (["--recipe", "/nonexistent/recipe.py"], "recipe"),
        (["--model", "resnet19"], "model"),
    ],
)
def test_cli_errors_name_the_culprit(colour_data, tmp_path, capsys, args, match):
    recipe = write_recipe(tmp_path, colour_data)
    assert main(["--recipe", str(recipe), "--out", str(tmp_path / "x"), "--device", "cpu", *args]) == 2
    assert match in capsys.readouterr().err


def test_a_recipe_that_fails_to_load_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import dalaug\nrecipe = dalaug.Phase(epochs=0)\n")
    assert main(["--recipe", str(bad)]) == 2
    assert "bad.py" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.py")), ids=lambda p: p.stem)
def test_every_recipe_in_pipelines_loads_and_is_named_for_its_file(path):
    from train.recipe import load_recipe

    recipe = load_recipe(path)
    assert recipe.name == path.stem and recipe.epochs == sum(p.epochs for p in recipe.phases)
    assert recipe.phases[-1].policy is None and not recipe.phases[-1].operators  # clean refinement


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"phases": []}, "phases"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"milestones": (5,)}, "milestones"),
        ({"precision": "fp8"}, "precision"),
        ({"warmup_epochs": 9}, "warmup_epochs"),
    ],
)
def test_bad_recipe_fields_are_named(changes, match):
    from train.recipe import Recipe

    fields = {"name": "x", "model": "resnet18", "phases": [dalaug.Phase(3)], **changes}
    with pytest.raises(ValueError, match=match):
        Recipe(**fields)


def test_the_summary_table_keeps_large_losses_in_their_columns():
    from types import SimpleNamespace

    from train.report import summary_table

    recipe = SimpleNamespace(phases=[SimpleNamespace(epochs=1, name="heavy")])
    row = {"epoch": 0, "top1": 1.0, "top5": 5.0, "clean_train_loss": 6.6412, "augmented_train_loss": 10776.0}
    last = summary_table(recipe, [row]).splitlines()[-1]
    assert last.split() == ["heavy", "1", "1.00", "5.00", "6.641", "1.078e+04"]


def test_manifold_mixup_in_a_recipe_mixes_inside_the_model_and_detaches_at_the_end(colour_data, tmp_path):
    from train.loop import Trainer
    from train.recipe import load_recipe

    path = write_recipe(tmp_path, colour_data, heavy=2, refine=1)
    path.write_text(path.read_text().replace("dalaug.Mixup(", "dalaug.ManifoldMixup("))
    recipe = load_recipe(path)
    trainer = Trainer(recipe, tmp_path / "out", device="cpu")
    (op,) = recipe.phases[0].operators
    hooked = [m for m in trainer.module.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooked  # attached to the model before training
    records = trainer.run()
    assert [r["phase"] for r in records] == ["heavy", "heavy", "refine"]
    assert all(r["train_loss"] == r["train_loss"] for r in records)  # finite: no NaN from the hooks
    assert not [m for m in trainer.module.modules() if m._forward_hooks or m._forward_pre_hooks]


def test_resume_at_a_boundary_that_changes_loader_options(colour_data, tmp_path):
    # The docs' refinement of a moderately augmented model drops flip and crop too: the saved
    # heavy-phase loader state must not be restored into the clean phase's different graph.
    from train.loop import Trainer
    from train.recipe import load_recipe

    path = write_recipe(tmp_path, colour_data, heavy=2, refine=2)
    path.write_text(path.read_text().replace(
        "dalaug.refine(heavy, epochs=2)",
        'dalaug.refine(dalaug.Phase(2, policy="randaugment", name="heavy"), epochs=2, '
        'options={"flip": False, "scale": (1.0, 1.0)})',
    ))  # fmt: skip
    recipe = load_recipe(path)
    assert recipe.phases[1].options["flip"] is False
    out = tmp_path / "out"
    Trainer(recipe, out, device="cpu").run(until=2)  # stops at the boundary, checkpoint saved
    resumed = Trainer(recipe, out, device="cpu", resume=True)
    records = resumed.run()
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert resumed.schedule.state_dict() == {"epoch": 4}


def test_the_curves_plot_takes_a_history_measured_only_now_and_then(tmp_path):
    # Trainer(eval_every=..., gap_every=...) leaves epochs without test or gap figures.
    from train.recipe import Recipe
    from train.report import write_plot

    recipe = Recipe(name="sparse", model="resnet18", phases=[dalaug.Phase(3), dalaug.Phase(1)])
    history = [
        {"epoch": 0, "train_loss": 2.0},
        {"epoch": 1, "train_loss": 1.5, "clean_train_loss": 1.2, "augmented_train_loss": 1.9},
        {"epoch": 2, "train_loss": 1.0, "test_loss": 1.1, "top1": 60.0, "top5": 90.0,
         "clean_train_loss": 0.8, "augmented_train_loss": 1.4},
        {"epoch": 3, "train_loss": 0.5, "test_loss": 0.9, "top1": 70.0, "top5": 95.0,
         "clean_train_loss": 0.4, "augmented_train_loss": 0.5},
    ]  # fmt: skip
    plot = write_plot(recipe, history, tmp_path / "curves.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_model_replaces_the_recipes_model_and_drops_its_kwargs(colour_data, tmp_path, capsys):
    recipe = write_recipe(tmp_path, colour_data, heavy=1, refine=1)  # preact_resnet18, width=4
    out = tmp_path / "out"
    assert main(["--recipe", str(recipe), "--out", str(out), "--device", "cpu", "--model", "resnet18"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "resnet18" and config["model_kwargs"] == {}
    # A recipe's kwargs its model refuses: one line naming the model and where it came from.
    recipe.write_text(recipe.read_text().replace('model="preact_resnet18"', 'model="resnet18"'))
    assert main(["--recipe", str(recipe), "--out", str(tmp_path / "bad"), "--device", "cpu"]) == 2
    line = error_line(capsys)
    assert "'resnet18'" in line and "--model" in line and "width" in line


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_train_and_val_with_other_classes_are_refused_at_the_start(colour_data, tmp_path, capsys, change):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(colour_data, data)
    if change == "missing":
        shutil.rmtree(data / "val" / "c2")  # the labels of c3 would shift onto c2
    else:
        shutil.copytree(data / "val" / "c3", data / "val" / "c9")
    recipe = write_recipe(tmp_path, data, heavy=1, refine=1)
    assert main(["--recipe", str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    line = error_line(capsys)
    assert str(data / "train") in line and str(data / "val") in line
    assert ("'c2'" if change == "missing" else "'c9'") in line
    assert not (tmp_path / "out").exists()


def test_operators_for_another_class_count_are_refused_at_the_start(colour_data, tmp_path, capsys):
    recipe = write_recipe(tmp_path, colour_data, heavy=1, refine=1)
    recipe.write_text(recipe.read_text().replace("num_classes=4", "num_classes=100"))
    assert main(["--recipe", str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    line = error_line(capsys)
    assert "num_classes=100" in line and "4 classes" in line


def test_a_short_run_keeps_every_milestone_and_refines_at_the_last_stages_rate():
    from train.recipe import load_recipe, with_epochs

    recipe = with_epochs(load_recipe(REPO / "pipelines" / "cifar100_mixup.py"), 2)
    assert recipe.milestones == (1, 1)
    assert recipe.base_lr(1) == pytest.approx(0.001)


def test_resume_under_other_settings_is_refused_naming_what_differs(colour_data, tmp_path, capsys):
    from train.loop import Trainer
    from train.recipe import load_recipe

    recipe = write_recipe(tmp_path, colour_data, heavy=2, refine=2)
    out = tmp_path / "out"
    Trainer(load_recipe(recipe), out, device="cpu").run(until=2)
    base = ["--recipe", str(recipe), "--out", str(out), "--device", "cpu", "--resume"]
    for extra, named in ((["--epochs", "3"], "epochs: 4 there, 3 now"), (["--model", "resnet18"], "model:")):
        assert main(base + extra) == 2
        line = error_line(capsys)
        assert str(out / "checkpoint.pt") in line and named in line
    # The same settings resume, also with the data copied elsewhere (a job's local disk); the
    # summary counts the epochs this process ran.
    moved = tmp_path / "moved"
    shutil.copytree(colour_data, moved)
    assert main(base + ["--data", str(moved)]) == 0
    assert "tiny: 2 epochs (resumed at epoch 2 of 4)" in capsys.readouterr().out
    assert [r["epoch"] for r in history(out)] == [0, 1, 2, 3]


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(colour_data, tmp_path, caplog):
    import logging

    from train.loop import Trainer
    from train.recipe import load_recipe

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="dalaug.train"):
        trainer = Trainer(load_recipe(write_recipe(tmp_path, colour_data)), out, device="cpu", resume=True)
    assert trainer.start_epoch == 0
    assert f"no checkpoint at {out / 'checkpoint.pt'}: starting from scratch" in caplog.text


def test_an_out_that_is_a_file_is_refused_before_training(colour_data, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        assert main(["--recipe", str(write_recipe(tmp_path, colour_data)), "--out", str(out)]) == 2
        assert "--out" in error_line(capsys)


def test_config_records_the_absolute_data_path_and_the_precision_actually_used(colour_data, tmp_path):
    from train.loop import Trainer
    from train.recipe import load_recipe

    recipe = load_recipe(write_recipe(tmp_path, colour_data, heavy=1, refine=1))
    relative = os.path.relpath(colour_data)
    out = tmp_path / "out"
    recipe = recipe.replace(data=relative, precision="bf16", channels_last=True)
    Trainer(recipe, out, device="cpu").run(until=0)
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == str(colour_data.resolve())
    assert config["precision"] == "fp32" and config["channels_last"] is False  # a CPU run
