"""The ``dalaug`` command line (also ``python -m dalaug``).

    dalaug verify PATH [--report FILE] [--workers N] [--no-progress]
    dalaug convert-cifar SRC DEST [--format folder|webdataset]

``verify`` decodes every sample of a data set with DALI and exits 1 when any fails, so it can gate
a training job: ``dalaug verify /data/train && torchrun train.py ...``. ``convert-cifar`` turns
torchvision's downloaded CIFAR-10/100 batches into ``DEST/train`` and ``DEST/val`` of PNG files,
the ``--data`` folder of the CIFAR recipes in ``pipelines/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0: all good, 1: files fail, 2: bad usage)."""
    parser = argparse.ArgumentParser(prog="dalaug", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "verify",
        help="decode every sample of a data set with DALI and report the files that fail",
        description="Decode every sample with DALI's decoder (the one training uses), in parallel; "
        "print the files that fail and why, write a JSON report, exit 1 when any fail.",
    )
    check.add_argument("path", help="ImageFolder directory, WebDataset .tar shard or folder of shards")
    check.add_argument(
        "--report", default=None, metavar="FILE",
        help="where to write the JSON report (default: ./dalaug-verify.json)",
    )  # fmt: skip
    check.add_argument("--workers", type=int, default=None, help="decoding threads (default: all cores)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    convert = commands.add_parser(
        "convert-cifar",
        help="convert torchvision's downloaded CIFAR-10/100 to train/ and val/ PNG folders or shards",
        description="Read the pickled batches of cifar-10-batches-py/ or cifar-100-python/ and write "
        "DEST/train and DEST/val (lossless PNG; labels are CIFAR's indices) and DEST/classes.txt.",
    )
    convert.add_argument("src", help="the cifar-10-batches-py or cifar-100-python folder, or its parent")
    convert.add_argument("dest", help="folder to create (must not exist)")
    convert.add_argument(
        "--format", default="folder", choices=["folder", "webdataset"],
        help="ImageFolder of PNGs (default) or WebDataset .tar shards",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _verify(args)
    if args.command == "convert-cifar":
        return _convert_cifar(args)
    return EXIT_USAGE  # unreachable: argparse requires a known command


def _verify(args: argparse.Namespace) -> int:
    from dalaug.reading.verification import DEFAULT_REPORT, check_report_path, verify

    if args.workers is not None and args.workers <= 0:
        print(f"dalaug verify: --workers: expected a positive int, got {args.workers}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report_path = check_report_path(args.report or DEFAULT_REPORT)  # before hours of decoding
        report = verify(args.path, workers=args.workers, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"dalaug verify: {error}", file=sys.stderr)
        return EXIT_USAGE
    for name, reason in sorted(report.failures.items()):
        print(f"FAIL {name}: {reason}")
    for name, note in sorted(report.notes.items()):
        print(f"NOTE {name}: {note}")
    try:
        written = report.write(report_path)
    except (OSError, ValueError) as error:  # the folder went away, or the disk filled, meanwhile
        print(f"dalaug verify: cannot write the report: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"{len(report.failures)} of {report.num_samples} samples fail to decode "
        f"({report.seconds:.1f} s); report: {written}"
    )
    return EXIT_OK if report.ok else EXIT_FAILURES


def _convert_cifar(args: argparse.Namespace) -> int:
    from dalaug.cifar import convert_cifar

    try:
        dest = convert_cifar(args.src, args.dest, fmt=args.format)
    except (FileNotFoundError, FileExistsError) as error:
        print(f"dalaug convert-cifar: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:  # a corrupt batch or meta file
        print(f"dalaug convert-cifar: {error}", file=sys.stderr)
        return EXIT_FAILURES
    print(f"wrote {dest / 'train'} and {dest / 'val'} ({args.format})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
