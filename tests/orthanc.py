"""A real Orthanc PACS (Debian's ``orthanc`` + ``orthanc-dicomweb``) on a loopback port.

Used by the DICOMweb tests; they skip, saying how to enable them, where the
packages are not installed (``.ci/run`` installs them with apt when it can).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
HOW_TO = ("Orthanc with its DICOMweb plugin is not installed: `apt-get install orthanc "
          "orthanc-dicomweb` (Debian/Ubuntu) enables these tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        for p in sorted(Path(folder).glob("libOrthancDicomWeb.so*")):
            return p
    return None


class Orthanc:
    """One Orthanc process with a temporary storage folder; ``url`` is its DICOMweb root."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
        plugin = _plugin()
        if binary is None or plugin is None:
            pytest.skip(HOW_TO)
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/dicom-web"
        config = {"Name": "fracsurv-test", "StorageDirectory": str(workdir / "db"),
                  "IndexDirectory": str(workdir / "db"), "HttpPort": self.port,
                  "DicomServerEnabled": False, "RemoteAccessAllowed": False,
                  "AuthenticationEnabled": False, "Plugins": [str(plugin)],
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
        cfg = workdir / "orthanc.json"
        cfg.write_text(json.dumps(config))
        self.log = open(workdir / "orthanc.log", "wb")  # closed in stop()
        self.proc = subprocess.Popen([binary, str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        import requests

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {self.proc.returncode}")
            try:
                if requests.get(f"{self.root}/system", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("Orthanc did not start within 30 s")

    def upload(self, path: str | Path) -> dict[str, str]:
        """Store one DICOM file (REST ``POST /instances``); returns its Orthanc ids."""
        import requests

        r = requests.post(f"{self.root}/instances", data=Path(path).read_bytes(), timeout=30)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def instance_ref(server: str, path: str | Path) -> str:
    """The DICOMweb instance reference of a local DICOM file uploaded to ``server``."""
    import pydicom

    from fracsurv.io import dicomweb_ref

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return dicomweb_ref(server, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                        str(ds.SOPInstanceUID))
