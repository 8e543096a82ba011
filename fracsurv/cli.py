"""Command line: ``fracsurv demo`` and ``fracsurv score``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x128, got {text!r}") from None
    return h, w


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fracsurv", description="Fracture risk from spine radiographs.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the whole pipeline on the synthetic cohort, write a report")
    d.add_argument("--out", type=Path, default=Path("fracsurv-demo"), help="output folder")
    d.add_argument("--n-patients", type=int, default=None,
                   help="cohort size (default: the demo cohort's size)")
    d.add_argument("--image-shape", type=_shape, default=None, help="HxW of the demo images")
    d.add_argument("--seed", type=int, default=0, help="random seed of splits and models")
    d.add_argument("--tiny", action="store_true",
                   help="smallest configuration (for tests): tiny models, few epochs")
    d.add_argument("--retrain", action="store_true",
                   help="train the image models from scratch instead of loading the "
                        "pretrained ones shipped with fracsurv")

    s = sub.add_parser("score", help="score new patients with a saved pipeline")
    s.add_argument("--model", type=Path, required=True, help="folder written by save_pipeline")
    s.add_argument("--images", type=Path, required=True, help="folder of DICOM/PNG images")
    s.add_argument("--clinical", type=Path, required=True,
                   help="CSV with patient_id, image (file name relative to --images) and the "
                        "clinical columns the model needs")
    s.add_argument("--out", type=Path, required=True, help="output CSV")
    s.add_argument("--allow-pickle", action="store_true",
                   help="allow steps saved with pickle (only for models you trust)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fracsurv`` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "demo":
        from fracsurv.demo import run_demo

        report = run_demo(out=args.out, n_patients=args.n_patients, image_shape=args.image_shape,
                          seed=args.seed, tiny=args.tiny, retrain=args.retrain)
        print(f"report: {report}")
        return 0
    from fracsurv.batch import score_patients

    n_ok, n_bad = score_patients(args.model, args.images, args.clinical, args.out,
                                 allow_pickle=args.allow_pickle)
    print(f"scored {n_ok} patients, {n_bad} failed (see the load_error column): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
