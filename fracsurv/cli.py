"""Command line: ``fracsurv demo``, ``fracsurv train`` and ``fracsurv score``."""

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


_EPILOG = """exit codes: 0 done (rows that failed are listed in the output's error column),
1 runtime error or every row failed, 2 usage error (bad arguments, unusable input files)."""


def _parser() -> argparse.ArgumentParser:
    import fracsurv

    p = argparse.ArgumentParser(prog="fracsurv", description="Fracture risk from spine radiographs.",
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"fracsurv {fracsurv.__version__}")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_true", help="print warnings and errors only")
    verbosity.add_argument("--debug", action="store_true",
                           help="debug log (file paths included) and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    d = sub.add_parser(
        "demo", formatter_class=fmt,
        help="run the whole pipeline on the synthetic cohort, write a report",
        description="Build the synthetic demo cohort (DICOM files), load the shipped pretrained "
                    "image models (or train them with --retrain), fit the survival models and "
                    "write report.html with its figures into --out.")
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

    from fracsurv.pretrained.train import MODEL_NAMES, PRESETS

    t = sub.add_parser(
        "train", formatter_class=fmt,
        help="train the pipeline's image models (built-in cohort or your data)",
        description="Train " + " -> ".join(MODEL_NAMES) + " in this order (each on what the "
                    "previous ones produce: the pVF scorer and the fusion model on detected "
                    "vertebrae), evaluate each on held-out data and write it with a model card "
                    "to --out/<name>. Checkpoints every epoch: after an interruption, the same "
                    "command with --resume continues. Load a result with "
                    "fracsurv.pretrained.load(name, models_dir=OUT). See docs/pretrained.md.")
    t.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="cohort sizes, resolutions and epochs (cpu: the shipped weights)")
    t.add_argument("--out", type=Path, default=Path("fracsurv-models"), help="output folder")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out")
    t.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=None, metavar="NAME",
                   help="train only these (" + ", ".join(MODEL_NAMES) + "); models they need "
                        "come from --upstream, --out or the shipped ones")
    t.add_argument("--data", type=Path, default=None,
                   help="your training table (CSV or Parquet, docs/data_contract.md) instead "
                        "of the synthetic cohort")
    t.add_argument("--upstream", type=Path, default=None,
                   help="folder of trained models the --models need")
    t.add_argument("--seed", type=int, default=0, help="random state of every model")

    s = sub.add_parser(
        "score", formatter_class=fmt, help="score new patients with a saved pipeline",
        description="Score every row of --clinical with a pipeline saved by save_pipeline. "
                    "Output CSV columns: patient_id, risk, the image scores the pipeline makes "
                    "(pvf, gpvf, risk_group, n_vertebrae, n_fractures, max_grade, "
                    "no_vertebra_found) and error (why a row has no risk). A bad row never "
                    "stops the others. Files are named in messages by a hash of their path "
                    "(--debug logs the path). See docs/score.md.")
    s.add_argument("--model", type=Path, required=True, help="folder written by save_pipeline")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of DICOM/PNG images")
    source.add_argument("--dicomweb", metavar="URL",
                        help="DICOMweb service root of a PACS (e.g. http://pacs:8042/dicom-web); "
                             "the image column then holds STUDY[/SERIES[/INSTANCE]] UIDs")
    s.add_argument("--study", action="append", metavar="UID", default=None,
                   help="with --dicomweb: score only rows in this study (repeatable)")
    s.add_argument("--clinical", type=Path, required=True,
                   help="CSV with patient_id, image (file name relative to --images, or "
                        "DICOMweb UIDs) and the clinical columns the model needs")
    s.add_argument("--out", type=Path, required=True,
                   help="output CSV (written atomically; a previous file is replaced)")
    s.add_argument("--cache-dir", type=Path, default=None,
                   help="image cache of this run, reused by later runs (default: a temporary "
                        "folder; the training machine's cache saved in the model is never used)")
    s.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="score on this dask.distributed scheduler (e.g. tcp://host:8786); "
                        "needs --cache-dir on storage all workers share")
    s.add_argument("--partition-size", type=int, default=64,
                   help="rows per dask task (with --scheduler)")
    s.add_argument("--allow-pickle", action="store_true",
                   help="allow steps saved with pickle (only for models you trust)")
    return p


def _logging(args: argparse.Namespace) -> None:
    """fracsurv's own log only (other libraries' INFO chatter stays silent)."""
    logger = logging.getLogger("fracsurv")
    logger.handlers[:] = [logging.StreamHandler(sys.stderr)]
    logger.handlers[0].setFormatter(logging.Formatter("%(message)s"))
    logger.setLevel(logging.DEBUG if args.debug else logging.WARNING if args.quiet
                    else logging.INFO)
    logger.propagate = False


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from fracsurv.demo import run_demo

        report = run_demo(out=args.out, n_patients=args.n_patients, image_shape=args.image_shape,
                          seed=args.seed, tiny=args.tiny, retrain=args.retrain,
                          quiet=args.quiet)
        print(f"report: {report}")
        return 0
    if args.command == "train":
        from fracsurv.pretrained.train import train

        written = train(args.out, preset=args.preset, resume=args.resume, models=args.models,
                        data=args.data, upstream=args.upstream, random_state=args.seed,
                        say=print)
        print(f"trained {len(written)} model(s) -> {args.out}")
        return 0
    from fracsurv.batch import score_patients

    n_ok, n_bad = score_patients(args.model, args.images, args.clinical, args.out,
                                 allow_pickle=args.allow_pickle, cache_dir=args.cache_dir,
                                 dicomweb=args.dicomweb, studies=args.study,
                                 scheduler=args.scheduler, partition_size=args.partition_size)
    print(f"scored {n_ok} of {n_ok + n_bad} rows -> {args.out}"
          + (f" ({n_bad} failed: see the error column)" if n_bad else ""))
    return 1 if n_ok == 0 else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fracsurv`` command; returns the exit code (see ``--help``)."""
    args = _parser().parse_args(argv)
    _logging(args)
    from fracsurv.batch import UsageError

    try:
        return _run(args)
    except UsageError as exc:
        print(f"fracsurv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fracsurv {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"fracsurv {args.command}: error: {type(exc).__name__}: {first} "
              "(--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
