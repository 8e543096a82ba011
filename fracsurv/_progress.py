"""Progress bars (tqdm) on long loops, shown when fracsurv's log shows INFO.

The command line logs INFO unless ``--quiet``, so bars appear there; a library
user turns them on with ``logging.getLogger("fracsurv").setLevel(logging.INFO)``.
They are drawn on a terminal only (not into log files). ``FRACSURV_PROGRESS=1``
or ``=0`` forces them on (terminal or not) or off. Bars go to stderr and
disappear when done.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress", "show_progress"]

T = TypeVar("T")


def _env_flag() -> bool | None:
    """``FRACSURV_PROGRESS`` as on/off, or None when unset or empty."""
    env = os.environ.get("FRACSURV_PROGRESS", "").strip().lower()
    return None if not env else env not in ("0", "false", "no", "off")


def show_progress() -> bool:
    """Whether long loops show a progress bar now (see the module notes)."""
    flag = _env_flag()
    return logging.getLogger("fracsurv").isEnabledFor(logging.INFO) if flag is None else flag


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             enabled: bool | None = None) -> Iterable[T] | Iterator[T]:
    """``iterable`` wrapped in a tqdm bar when ``enabled`` (default: :func:`show_progress`)."""
    forced = bool(enabled) or _env_flag() is True
    if not (forced or (enabled is None and show_progress())):
        return iterable
    from tqdm.auto import tqdm

    # disable=None: tqdm shows the bar only on a terminal (no \r noise in log files)
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr,
                mininterval=0.5, dynamic_ncols=True, disable=False if forced else None)
