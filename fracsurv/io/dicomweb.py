"""DICOMweb (WADO-RS / QIDO-RS) as an image source, through ``dicomweb-client``.

A *DICOMweb reference* is the standard resource URL of one instance,
``{server}/studies/{study}/series/{series}/instances/{sop}``, where ``server``
is the service root (e.g. ``http://pacs:8042/dicom-web``). A study or series
URL (``{server}/studies/{study}[/series/{series}]``) stands for all its
instances: :func:`expand_reference` lists them (QIDO-RS), and
:class:`~fracsurv.io.DicomLoader` loads them as a multi-image row.

Instances are retrieved one at a time, so a study is never held in memory as
a whole. UIDs identify patients' examinations: no message, log record or file
name of fracsurv contains one (cache keys hash them; messages name a reference
by :func:`ref_label`, a hash).

Needs the ``pacs`` extra (``pip install fracsurv[pacs]``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from fracsurv.io.dicom import DicomLoadError

__all__ = ["DicomWebRef", "dicomweb_ref", "expand_reference", "is_dicomweb", "list_dicomweb",
           "parse_reference", "ref_label", "retrieve_dataset"]

_SCHEMES = ("http://", "https://")
_LEVELS = ("studies", "series", "instances")


@dataclass(frozen=True)
class DicomWebRef:
    """A parsed DICOMweb reference (``series``/``instance`` ``None`` above instance level)."""

    server: str
    study: str
    series: str | None = None
    instance: str | None = None

    @property
    def url(self) -> str:
        """The reference as a DICOMweb resource URL."""
        parts = [self.server, "studies", self.study]
        if self.series:
            parts += ["series", self.series]
            if self.instance:
                parts += ["instances", self.instance]
        return "/".join(parts)


def is_dicomweb(item: Any) -> bool:
    """True for a string that looks like a DICOMweb resource URL."""
    return isinstance(item, str) and item.startswith(_SCHEMES) and "/studies/" in item


def parse_reference(url: str) -> DicomWebRef:
    """Split a DICOMweb URL into server root and UIDs (:class:`DicomLoadError` if malformed)."""
    server, sep, rest = url.rstrip("/").partition("/studies/")
    parts = rest.split("/") if sep else []
    uids: dict[str, str] = {}
    ok = bool(server.startswith(_SCHEMES) and parts)
    if ok:
        uids["studies"] = parts[0]
        for level, uid_pos in (("series", 2), ("instances", 4)):
            if len(parts) > uid_pos - 1:
                ok = ok and len(parts) > uid_pos and parts[uid_pos - 1] == level
                if ok:
                    uids[level] = parts[uid_pos]
        ok = ok and len(parts) in (1, 3, 5) and all(uids.values())
    if not ok:
        raise DicomLoadError("not a DICOMweb reference (expected {server}/studies/<uid>"
                             "[/series/<uid>[/instances/<uid>]])")
    return DicomWebRef(server, uids["studies"], uids.get("series"), uids.get("instances"))


def dicomweb_ref(server: str, study: str, series: str | None = None,
                 instance: str | None = None) -> str:
    """Build the reference URL of a study, series or instance on ``server``."""
    if instance and not series:
        raise ValueError("an instance reference needs its series UID")
    return DicomWebRef(server.rstrip("/"), study, series, instance).url


def ref_label(url: str) -> str:
    """How messages name a DICOMweb reference: a short hash, never its UIDs."""
    return "DICOMweb object #" + hashlib.sha256(url.encode()).hexdigest()[:10]


_local = threading.local()
_UID = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+){4,}(?![\w.])")
#: Libraries that log request URLs (and so UIDs) at INFO/DEBUG level.
_URL_LOGGERS = ("dicomweb_client.web", "dicomweb_client", "urllib3.connectionpool")


class _RedactUIDs(logging.Filter):
    """Replace DICOM UIDs in the log records of the HTTP libraries by ``<uid>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _UID.sub("<uid>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def _redact_library_logs() -> None:
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactUIDs) for f in logger.filters):
            logger.addFilter(_RedactUIDs())


def _client(server: str, timeout: float, retries: int) -> Any:
    """One ``DICOMwebClient`` per thread and setting, with urllib3 retries and a timeout."""
    try:
        import requests
        from dicomweb_client import DICOMwebClient
        from urllib3.util.retry import Retry
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise DicomLoadError("DICOMweb needs the 'pacs' extra: pip install 'fracsurv[pacs]'") \
            from None
    _redact_library_logs()
    cache = _local.__dict__.setdefault("clients", {})
    key = (server, float(timeout), int(retries))
    if key not in cache:
        session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=retries, status=retries,
                      backoff_factor=0.2, status_forcelist=(429, 500, 502, 503, 504),
                      allowed_methods=frozenset({"GET"}), raise_on_status=False)
        adapter = requests.adapters.HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        client = DICOMwebClient(server, session=session, timeout=timeout)
        client.set_http_retry_params(retry=False)  # urllib3 retries instead (exceptions too)
        cache[key] = client
    return cache[key]


def _call(fn: Any, timeout: float) -> Any:
    """Run a request; turn its failure into a :class:`DicomLoadError` without URL or UID."""
    import requests

    try:
        return fn()
    except requests.exceptions.HTTPError as exc:
        code = getattr(exc.response, "status_code", None)
        if code == 404:
            raise DicomLoadError("not found on the DICOMweb server (HTTP 404)") from None
        raise DicomLoadError(f"the DICOMweb server answered HTTP {code}") from None
    except requests.exceptions.RetryError:
        raise DicomLoadError("the DICOMweb server kept failing (retries exhausted)") from None
    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
        # urllib3 reports a read timeout after retries as a ConnectionError
        if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
            raise DicomLoadError(f"the DICOMweb server did not answer within {timeout:g} s") \
                from None
        raise DicomLoadError("the DICOMweb server is unreachable (connection failed)") from None
    except requests.exceptions.RequestException as exc:
        raise DicomLoadError(f"DICOMweb request failed ({type(exc).__name__})") from None
    except (ValueError, KeyError) as exc:  # a reply that is not DICOM / not multipart
        raise DicomLoadError(f"the DICOMweb reply is not a DICOM instance "
                             f"({type(exc).__name__})") from None


def retrieve_dataset(url: str, timeout: float = 30.0, retries: int = 3) -> Any:
    """Retrieve one instance (WADO-RS) as a ``pydicom.Dataset``.

    Raises
    ------
    DicomLoadError
        For a malformed reference, a study/series (not instance) reference, an
        unreachable or failing server, a timeout, or a missing instance; the
        message contains no UID.
    """
    ref = parse_reference(url)
    if ref.instance is None:
        raise DicomLoadError("a study or series reference: expand it into instances first "
                             "(fracsurv.io.dicomweb.expand_reference)")
    client = _client(ref.server, timeout, retries)
    return _call(lambda: client.retrieve_instance(ref.study, ref.series, ref.instance), timeout)


_UID_TAGS = {"study": "0020000D", "series": "0020000E", "instance": "00080018",
             "number": "00200013"}


def _tag(record: dict[str, Any], tag: str) -> Any:
    values = record.get(tag, {}).get("Value") or [None]
    return values[0]


def expand_reference(url: str, timeout: float = 30.0, retries: int = 3) -> list[str]:
    """Instance references of a study/series reference (itself for an instance).

    Ordered by series, then instance number (QIDO-RS ``search_for_instances``).
    """
    ref = parse_reference(url)
    if ref.instance is not None:
        return [url]
    client = _client(ref.server, timeout, retries)
    records = _call(lambda: client.search_for_instances(
        study_instance_uid=ref.study, series_instance_uid=ref.series,
        fields=["SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber"],
        get_remaining=True), timeout)
    found = [(_tag(r, _UID_TAGS["series"]), _tag(r, _UID_TAGS["number"]),
              _tag(r, _UID_TAGS["instance"])) for r in records]
    found = [f for f in found if f[0] and f[2]]
    if not found:
        raise DicomLoadError("no instances under this DICOMweb reference")
    found.sort(key=lambda f: (str(f[0]), int(f[1]) if str(f[1] or "").isdigit() else 0))
    return [dicomweb_ref(ref.server, ref.study, s, i) for s, _, i in found]


def list_dicomweb(server: str, timeout: float = 30.0, retries: int = 3,
                  **search_filters: Any) -> Any:
    """Instances on ``server`` matching QIDO-RS filters, one row each.

    Parameters
    ----------
    server : str
        Service root, e.g. ``http://pacs:8042/dicom-web``.
    **search_filters
        QIDO-RS attribute filters such as ``Modality="CR"``.

    Returns
    -------
    DataFrame
        ``image`` (instance reference, for :class:`~fracsurv.io.DicomLoader`)
        and ``study`` (an index of the study within this listing, not its UID),
        so a user can join the clinical table by the reference.
    """
    import pandas as pd

    client = _client(server.rstrip("/"), timeout, retries)
    records = _call(lambda: client.search_for_instances(
        fields=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        search_filters=search_filters or None, get_remaining=True), timeout)
    rows = [(_tag(r, _UID_TAGS["study"]), _tag(r, _UID_TAGS["series"]),
             _tag(r, _UID_TAGS["instance"])) for r in records]
    rows = [r for r in rows if all(r)]
    studies = {s: k for k, s in enumerate(dict.fromkeys(r[0] for r in rows))}
    return pd.DataFrame({"image": [dicomweb_ref(server, *r) for r in rows],
                         "study": [studies[r[0]] for r in rows]})
