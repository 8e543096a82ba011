"""Helpers shared by the benchmark scripts: environment record and JSON output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """Machine and library facts recorded next to every measurement."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def write_json(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` (plus the environment) to ``benchmarks/results/<name>.json``."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "environment": environment(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {path}")
    return path


def cpu_cropper(**overrides: Any):
    """A ``VertebraCropper`` with the CPU settings its benchmark reached its detection targets with.

    (``benchmarks/vertebra_cropper.py --channels 8,16,32,64 --window 64x96 --lr 5e-3
    --epochs 30``; no early stopping.) Keyword arguments override any parameter.
    """
    from fracsurv.vertebrae import VertebraCropper

    epochs = overrides.pop("max_epochs", 30)
    params: dict[str, Any] = {
        "input_shape": (256, 128), "channels": (8, 16, 32, 64), "num_res_units": 0,
        "train_window": (64, 96), "lr": 5e-3, "batch_size": 8, "max_epochs": epochs,
        "validation_fraction": 0.1, "patience": epochs, "device": "cpu", "random_state": 0}
    return VertebraCropper(**{**params, **overrides})
