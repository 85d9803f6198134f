"""Train a recipe: ``python -m train [--recipe pipelines/X.py] [--data PATH] [--epochs N] ...``.

Without arguments it runs the embedded default (digits, written on first use; no network).
Under ``torchrun --nproc_per_node=N -m train ...`` it runs DDP, one shard per rank.

Exit codes: 0 trained to the end; 2 a bad argument, recipe, data folder or checkpoint (named on
stderr); 75 (EX_TEMPFAIL, ``--stop-exit-code``) stopped by SIGTERM or SIGUSR1 after writing its
checkpoint: run the same command with ``--resume`` to go on from that step.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "pipelines" / "digits_default.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="recipe file (pipelines/*.py)")
    parser.add_argument(
        "--data", help="folder (or s3://, gs:// prefix) with train/ and val/ (or test/); overrides the recipe"
    )
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
    keeping = parser.add_argument_group("checkpoints and preemption")
    keeping.add_argument(
        "--checkpoint-steps",
        type=int,
        metavar="N",
        help="also checkpoint every N training steps (0: off; default: the recipe's, off)",
    )
    keeping.add_argument(
        "--checkpoint-minutes",
        type=float,
        metavar="M",
        help="also checkpoint when M minutes passed since the last one (0: off; default: the recipe's, 10)",
    )
    keeping.add_argument(
        "--stop-grace",
        type=float,
        metavar="S",
        help="seconds between the scheduler's SIGTERM and its SIGKILL (default: the "
        "recipe's, 30): a signal is answered within a tenth of it, plus the save",
    )
    keeping.add_argument(
        "--stop-exit-code",
        type=int,
        default=75,
        metavar="CODE",
        help="exit code after a SIGTERM/SIGUSR1 checkpoint (default 75, EX_TEMPFAIL: not "
        "a success, not a death by signal; 0 for a launcher that must not restart)",
    )
    keeping.add_argument(
        "--allow-world-size-change",
        action="store_true",
        help="--resume a checkpoint of another number of ranks (the per-rank batch is kept, "
        "so the global batch changes; the LR schedule is not scaled)",
    )
    keeping.add_argument(
        "--log-samples",
        action="store_true",
        help="append each step's sample ids to <out>/samples/rank<R>.jsonl",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from train.loop import STOP_SIGNALS, Trainer
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
        trainer = Trainer(
            recipe, args.out or Path("runs") / recipe.name, args.device, args.resume,
            checkpoint_steps=args.checkpoint_steps, checkpoint_minutes=args.checkpoint_minutes,
            stop_grace=args.stop_grace, allow_world_size_change=args.allow_world_size_change,
            log_samples=args.log_samples,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = trainer.start_epoch
    history = trainer.run()
    if trainer.stopped is not None:
        # The checkpoint is written: a second SIGTERM (torchrun stops the other workers as soon as
        # one exits) must not turn this exit into a death by signal.
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    if trainer.stopped is not None:
        # The grace period is short: no summary, no plot. The checkpoint holds the run.
        return args.stop_exit_code
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
