"""Many ranks: 2 and 3 CPU processes under torchrun (gloo) share out every epoch, across a swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from data_faults import write_fault

from dalaug.datasets import write_photo_folder
from dalaug.reading.sources import resolve_source

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """24 photos (a whole number of batches per rank for 2 and 3 ranks), 25 (padding needed), and
    23 photos plus one truncated JPEG."""
    root = tmp_path_factory.mktemp("ranks")
    train = write_photo_folder(root / "train", 24, num_classes=3, short_side=(40, 64))
    odd = write_photo_folder(root / "eval", 25, num_classes=3, short_side=(40, 64))
    bad = write_photo_folder(root / "bad", 23, num_classes=3, short_side=(40, 64), seed=1)
    write_fault("truncated_jpeg", bad / "class_001" / "000100_bad.jpg")
    return train, odd, bad


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_gets_the_same_batch_count_and_every_sample_appears(folders, world_size, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to the interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        str(torchrun), "--standalone", f"--nproc_per_node={world_size}", str(HERE / "ranks_worker.py"),
        str(tmp_path), *map(str, folders),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world_size)]

    # The documented duplicates of training: padding to a multiple of world_size, and one per bad
    # file left out (its rank pads its shard back to length with its own first samples). Evaluation
    # counts every sample exactly once; its ranks may differ by a batch.
    bad_file = folders[2] / "class_001" / "000100_bad.jpg"
    bad_id = resolve_source(folders[2]).paths.index(str(bad_file))
    cases = {
        "train": (set(range(24)), 0),
        "eval": (set(range(25)), 0),
        "bad": (set(range(24)) - {bad_id}, 1),
    }
    for name, (expected, duplicates) in cases.items():
        runs = [rank[name] for rank in ranks]
        for epoch in range(3):  # epoch 2 comes from the clean loader swapped in
            counts = [len(run["epochs"][epoch]["batches"]) for run in runs]
            assert counts == [run["epochs"][epoch]["len"] for run in runs], (name, epoch)
            assert runs[0]["epochs"][epoch]["all_counts"] == counts
            if name != "eval":
                assert len(set(counts)) == 1, (name, epoch, counts)
            ids = Counter(i for run in runs for batch in run["epochs"][epoch]["batches"] for i in batch)
            assert set(ids) == expected, (name, epoch)
            assert sum(ids.values()) - len(ids) == duplicates, (name, epoch, ids)
    reported = {path for rank in ranks for path in rank["bad"]["bad"]}
    assert reported == {str(bad_file)}
