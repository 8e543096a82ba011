"""Write a fitted estimator as a shipped model: weights (fp16 where asked), config, card."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["publish", "render_card"]


def _half_weights(path: Path) -> None:
    """Store the module's floating-point tensors in ``path/weights.safetensors`` as float16.

    Loading casts them back into the estimator's float32 parameters
    (``load_state_dict`` copies with dtype conversion), so only storage changes.
    Extra fitted arrays (``extra.*``: scalings, thresholds) stay as they are.
    """
    from fracsurv._serial import read_arrays, write_arrays

    file = path / "weights.safetensors"
    arrays = read_arrays(file)
    write_arrays({k: v.astype(np.float16) if k.startswith("module.")
                  and v.dtype in (np.float32, np.float64) else v
                  for k, v in arrays.items()}, file)


def render_card(c: dict[str, Any]) -> str:
    """The markdown model card of a ``card.json`` dict."""
    def block(d: dict[str, Any]) -> list[str]:
        return [f"- {k.replace('_', ' ')}: {json.dumps(v) if isinstance(v, (list, dict)) else v}"
                for k, v in d.items()]

    lines = [f"# Model card: {c['name']} ({c['estimator']})", "", c.get("task", ""), "",
             "**Trained on simulated data only** (fracsurv's synthetic lateral-spine cohort, "
             f"generator v{c.get('generator_version')}). These weights model the simulated "
             "cohort; for real radiographs train the same model on your data with "
             "`fracsurv train --data` (`docs/pretrained.md`).", "",
             f"Load: `fracsurv.pretrained.load({c['name']!r})`.", "", "## Training", ""]
    lines += block(c.get("training", {}))
    lines += ["", "## Held-out evaluation", ""]
    lines += block(c.get("heldout", {}))
    if c.get("storage"):
        lines += ["", "## Storage", "", *block(c["storage"])]
    if c.get("limitations"):
        lines += ["", "## Limitations", ""] + [f"- {x}" for x in c["limitations"]]
    return "\n".join(lines) + "\n"


def publish(estimator: Any, name: str, card: dict[str, Any], out_dir: str | Path,
            *, half: bool = True) -> Path:
    """Save ``estimator`` under ``out_dir/name`` with ``card.json`` and ``card.md``.

    Parameters
    ----------
    estimator : fitted fracsurv torch estimator
    name : str
        The model's name in :func:`fracsurv.pretrained.available`.
    card : dict
        ``task``, ``training`` and ``heldout`` facts; the estimator class, fracsurv
        and cohort-generator versions, input shape and machine are added here.
    half : bool, default=True
        Store weights as float16 (check the loss of accuracy before shipping: the
        card's ``storage`` entry should say what was measured).
    """
    import fracsurv
    from fracsurv.datasets.spine import GENERATOR_VERSION

    path = Path(out_dir) / name
    if path.exists():
        shutil.rmtree(path)
    estimator.save(path)
    if half:
        _half_weights(path)
    params = estimator.get_params(deep=False)
    full = {"name": name, "estimator": type(estimator).__name__,
            "fracsurv_version": fracsurv.__version__, "generator_version": GENERATOR_VERSION,
            "input_shape": list(params["input_shape"]) if "input_shape" in params else None,
            "saved_on": {"machine": platform.machine(), "python": platform.python_version()},
            **card}
    full.setdefault("storage", {})["weights_dtype"] = "float16" if half else "float32"
    (path / "card.json").write_text(json.dumps(full, indent=2, default=float))
    (path / "card.md").write_text(render_card(full))
    return path
