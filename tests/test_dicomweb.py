"""DICOMweb as an image source, against a real Orthanc PACS on a loopback port."""

import logging
import socket
import threading

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from fracsurv.datasets import make_spine_cohort
from fracsurv.io import DicomLoader, DicomLoadError, dicomweb_ref, list_dicomweb
from fracsurv.io import dicomweb as dw
from tests.orthanc import Orthanc, free_port, instance_ref

SHAPE = (64, 32)
SECRETS = {"PatientName": "LEAKME^SECRETNAME", "PatientID": "SECRETID123",
           "AccessionNumber": "ACCSECRET77", "InstitutionName": "SECRET HOSPITAL"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding 4 cohort radiographs, a 2-instance study and a non-image instance."""
    root = tmp_path_factory.mktemp("pacs")
    server = Orthanc(root)
    try:
        cohort = make_spine_cohort(4, image_shape=(128, 64), random_state=7,
                                   out_dir=root / "cohort")
        files = list(cohort.frame["image"])
        for f in files:
            server.upload(f)
        # a planted-identifier study with two instances (instance numbers 2 then 1)
        study, series = generate_uid(), generate_uid()
        two = []
        for k, src in enumerate(files[:2]):
            ds = pydicom.dcmread(src)
            for key, v in SECRETS.items():
                setattr(ds, key, v)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = 2 - k
            path = root / f"two{k}.dcm"
            ds.save_as(path)
            server.upload(path)
            two.append(path)
        # a non-image object (no pixel data) in its own study
        sr = pydicom.dcmread(files[0], stop_before_pixels=True)
        for key, v in SECRETS.items():
            setattr(sr, key, v)
        for kw in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                   "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
            if kw in sr:
                delattr(sr, kw)
        sr.StudyInstanceUID, sr.SeriesInstanceUID = generate_uid(), generate_uid()
        sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
        sr.Modality = "SR"
        (root / "sr.dcm").unlink(missing_ok=True)
        sr.save_as(root / "sr.dcm")
        server.upload(root / "sr.dcm")
        yield {"server": server, "url": server.url, "files": files, "two": two,
               "frame": cohort.frame,
               "study": study, "series": series, "sr": root / "sr.dcm",
               "uids": [str(v) for p in [*files, *two, root / "sr.dcm"]
                        for ds in [pydicom.dcmread(p, stop_before_pixels=True)]
                        for v in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)]}
    finally:
        server.stop()


def _loader(**kw):
    return DicomLoader(output_shape=SHAPE, dicomweb_timeout=5, dicomweb_retries=1, **kw)


def test_reference_parsing_round_trips_and_rejects_malformed():
    url = dicomweb_ref("http://h:1/dicom-web/", "1.2", "3.4", "5.6")
    assert url == "http://h:1/dicom-web/studies/1.2/series/3.4/instances/5.6"
    ref = dw.parse_reference(url)
    assert (ref.server, ref.study, ref.series, ref.instance) == ("http://h:1/dicom-web", "1.2",
                                                                 "3.4", "5.6")
    assert dw.parse_reference("http://h/studies/1.2").series is None
    for bad in ["http://h/studies/", "http://h/studies/1/series", "http://h/studies/1/x/2",
                "http://h/studies/1/series/2/instances", "ftp://h/studies/1"]:
        with pytest.raises(DicomLoadError, match="not a DICOMweb reference"):
            dw.parse_reference(bad)
    with pytest.raises(ValueError, match="series"):
        dicomweb_ref("http://h", "1", instance="2")


def test_pacs_images_equal_the_files_and_the_cache_is_reused(pacs, tmp_path, monkeypatch):
    refs = [instance_ref(pacs["url"], f) for f in pacs["files"]]
    local = _loader().fit_transform(pd.DataFrame({"image": pacs["files"]}))
    cache = tmp_path / "cache"
    remote = _loader(cache_dir=str(cache)).fit_transform(pd.DataFrame({"image": refs}))
    for a, b in zip(local["image"], remote["image"], strict=True):
        np.testing.assert_allclose(np.load(b).astype(np.float32), a, atol=1e-3)  # float16 cache
    assert list(remote["modality"]) == list(local["modality"])
    # a rerun reads the cache: no request reaches the server
    monkeypatch.setattr(dw, "retrieve_dataset", lambda *a, **k: pytest.fail("server asked"))
    again = _loader(cache_dir=str(cache)).fit_transform(pd.DataFrame({"image": refs}))
    assert list(again["image"]) == list(remote["image"])


def test_a_study_reference_loads_its_instances_in_instance_order(pacs):
    study = dicomweb_ref(pacs["url"], pacs["study"])
    assert dw.expand_reference(study) == [instance_ref(pacs["url"], p)
                                          for p in reversed(pacs["two"])]
    out = _loader().fit_transform(pd.DataFrame({"image": [study]}))
    images = out["image"][0]
    assert isinstance(images, list) and len(images) == 2
    direct = _loader().fit_transform(pd.DataFrame({"image": [str(pacs["two"][1])]}))
    np.testing.assert_allclose(images[0], direct["image"][0])
    listing = list_dicomweb(pacs["url"])
    assert len(listing) == 4 + 2 + 1 and listing["study"].nunique() == 4 + 1 + 1


class _Hanging:
    """A TCP server that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self):
        self.stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


def test_bad_pacs_inputs_are_named_per_row_without_identifiers(pacs, tmp_path, caplog):
    good = instance_ref(pacs["url"], pacs["files"][0])
    planted = instance_ref(pacs["url"], pacs["two"][0])
    missing = dicomweb_ref(pacs["url"], generate_uid(), generate_uid(), generate_uid())
    hanging = _Hanging()
    try:
        rows = {
            "good": good,
            "planted": planted,
            "unreachable": dicomweb_ref(f"http://127.0.0.1:{free_port()}/dicom-web",
                                        "1.2.3", "4.5.6", "7.8.9"),
            "404": missing,
            "non-image": instance_ref(pacs["url"], pacs["sr"]),
            "hangs": dicomweb_ref(f"http://127.0.0.1:{hanging.port}/dicom-web", "1.2", "3.4",
                                  "5.6"),
            "malformed": pacs["url"] + "/studies/1.2/series",
        }
        X = pd.DataFrame({"patient_id": list(rows), "image": list(rows.values())})
        cache = tmp_path / "cache"
        loader = DicomLoader(output_shape=SHAPE, dicomweb_timeout=1, dicomweb_retries=0,
                             cache_dir=str(cache), on_error="skip")
        with caplog.at_level(logging.DEBUG):
            out = loader.fit_transform(X).set_index("patient_id")
            with pytest.raises(DicomLoadError) as raised:
                DicomLoader(output_shape=SHAPE, dicomweb_timeout=1, dicomweb_retries=0).fit_transform(
                    X.iloc[[0, 3]])
    finally:
        hanging.close()
    err = out["load_error"]
    assert err[["good", "planted"]].isna().all()
    assert out.loc["good", "image"].endswith(".npy")
    assert "unreachable" in err["unreachable"]
    assert "HTTP 404" in err["404"]
    assert "no pixel data" in err["non-image"] or "truncated" in err["non-image"]
    assert "did not answer within 1 s" in err["hangs"]
    assert "not a DICOMweb reference" in err["malformed"]
    assert "position 1" in str(raised.value) and "HTTP 404" in str(raised.value)
    assert not list(cache.rglob("*.tmp"))  # nothing half-written
    written = b"".join(p.read_bytes() + str(p).encode() for p in cache.rglob("*") if p.is_file())
    haystacks = [written, caplog.text.encode(), str(raised.value).encode(),
                 out.drop(columns="image").to_csv().encode()]
    for needle in [*SECRETS.values(), *pacs["uids"], "SECRET"]:
        for hay in haystacks:
            assert needle.encode() not in hay, needle


def test_score_command_reads_a_pacs(pacs, tmp_path):
    from sklearn.pipeline import Pipeline

    from fracsurv.cli import main
    from fracsurv.datasets import CLINICAL_COLUMNS
    from fracsurv.persist import save_pipeline
    from fracsurv.preprocessing import SelectColumns
    from fracsurv.survival import DeepSurvRegressor

    train = make_spine_cohort(30, image_shape=(64, 32), random_state=2)
    pipe = Pipeline([
        ("load", DicomLoader(output_shape=SHAPE)),
        ("select", SelectColumns(CLINICAL_COLUMNS)),
        ("cox", DeepSurvRegressor(hidden_units=(), optimizer="lbfgs", lr=1.0, max_epochs=3,
                                  random_state=0)),
    ]).fit(train.frame, train.target)
    save_pipeline(pipe, tmp_path / "model")
    frame = pacs["frame"]
    clinical = frame.drop(columns=["keypoints", "followup_image"]).copy()
    uids = [instance_ref(pacs["url"], f).split("/studies/")[1] for f in frame["image"]]
    clinical["image"] = [u.replace("/series/", "/").replace("/instances/", "/") for u in uids]
    clinical.loc[1, "image"] = f"{generate_uid()}/{generate_uid()}/{generate_uid()}"  # 404
    clinical.loc[2, "image"] = uids[2].split("/series/")[0]  # a study UID alone
    clinical.to_csv(tmp_path / "pacs.csv", index=False)
    out = tmp_path / "scores.csv"
    args = ["score", "--model", str(tmp_path / "model"), "--dicomweb", pacs["url"],
            "--clinical", str(tmp_path / "pacs.csv"), "--out", str(out)]
    assert main(args) == 0
    scores = pd.read_csv(out)
    assert scores["risk"].isna().tolist() == [False, True, False, False]
    assert "HTTP 404" in scores.loc[1, "error"]
    expected = pipe.predict(frame.drop(index=1))
    np.testing.assert_allclose(scores["risk"].dropna(), expected, rtol=1e-6)
    text = out.read_text()
    assert not any(u in text for u in pacs["uids"]) and "ZZFAKE" not in text
    # --study keeps the rows of that study only
    study = uids[3].split("/series/")[0]
    assert main([*args, "--study", study]) == 0
    assert pd.read_csv(out)["patient_id"].tolist() == [frame["patient_id"][3]]
    assert main([*args, "--study", generate_uid()]) == 2
