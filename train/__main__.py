"""Train a recipe: ``python -m train [--recipe pipelines/X.py] [--data PATH] [--epochs N] ...``.

Without arguments it runs the embedded default (digits, written on first use; no network).
Under ``torchrun --nproc_per_node=N -m train ...`` it runs DDP, one shard per rank.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "pipelines" / "digits_default.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="recipe file (pipelines/*.py)")
    parser.add_argument("--data", help="folder with train/ and val/ (or test/); overrides the recipe")
    parser.add_argument("--epochs", type=int, help="total epochs; every phase scales in proportion")
    parser.add_argument("--batch-size", type=int, help="per-process batch size")
    parser.add_argument("--lr", type=float, help="base learning rate")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--model",
        help="model name (torchvision, timm, or preact_resnet18); replaces the recipe's model and "
        "drops its model_kwargs, which belong to that model",
    )
    parser.add_argument("--out", help="run folder (default runs/<recipe name>)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from train.loop import Trainer
    from train.recipe import load_recipe, with_epochs
    from train.report import summary_table, write_plot

    try:
        recipe = load_recipe(args.recipe)
        overrides = {"data": args.data, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
        recipe = recipe.replace(**{k: v for k, v in overrides.items() if v is not None})
        if args.model is not None and args.model != recipe.model:  # its kwargs fit the recipe's model only
            recipe = recipe.replace(model=args.model, model_kwargs={})
        if args.epochs is not None:
            recipe = with_epochs(recipe, args.epochs)
        start = time.perf_counter()
        trainer = Trainer(recipe, args.out or Path("runs") / recipe.name, args.device, args.resume)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = trainer.start_epoch
    history = trainer.run()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    if trainer.rank == 0 and history:
        # What this process ran: after a resume, fewer epochs than the recipe's.
        ran = f"{recipe.epochs - first} epochs"
        if first:
            ran += f" (resumed at epoch {first} of {recipe.epochs})"
        print(f"\n{recipe.name}: {ran} in {time.perf_counter() - start:.0f} s on {trainer.device}\n")
        print(summary_table(recipe, history))
        plot = write_plot(recipe, history, trainer.out / "curves.png")
        print(f"\nmetrics: {trainer.out / 'metrics.jsonl'}\nplot:    {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
