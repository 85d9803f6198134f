"""One rank of a distributed run, launched by tests/test_ranks.py under torchrun (gloo, CPU).

    torchrun --nproc_per_node=N ranks_worker.py OUT TRAIN_DATA EVAL_DATA BAD_DATA

For each data set it iterates 3 epochs, swapping in ``with_options(policy=None)`` (the clean
loader of a refinement phase) after epoch 1, and writes the sample
ids of every batch to OUT/rank<r>.json. The ranks all_gather their batch counts every epoch, as
DDP's collectives would need them to agree.
"""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

import dalaug

EPOCHS, SWAP_AT = 3, 2


def run(root: str, train: bool, policy: str | None) -> dict:
    loader = dalaug.Loader(
        root, 4, train=train, crop=32, device="cpu", seed=5, num_threads=1, max_bad_fraction=0.1,
        policy=policy,
    )  # fmt: skip
    epochs = []
    for epoch in range(EPOCHS):
        if epoch == SWAP_AT and train:
            clean = loader.with_options(policy=None)
            loader.close()
            loader = clean
        loader.set_epoch(epoch)
        batches = [loader.sample_ids.tolist() for _ in loader]
        counts = [None] * dist.get_world_size()
        dist.all_gather_object(counts, len(batches))
        epochs.append({"batches": batches, "len": len(loader), "all_counts": counts})
    return {"epochs": epochs, "bad": sorted(loader.bad_samples), "num_samples": loader.num_samples}


def main(out: str, train_data: str, eval_data: str, bad_data: str) -> None:
    dist.init_process_group("gloo")
    result = {
        "train": run(train_data, True, "autoaugment"),
        "eval": run(eval_data, False, None),
        "bad": run(bad_data, True, None),  # a policy costs time here and changes nothing tested
    }
    with open(f"{out}/rank{dist.get_rank()}.json", "w") as file:
        json.dump(result, file)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
