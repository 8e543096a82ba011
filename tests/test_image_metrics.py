"""CNNProbe: it learns what the images show, and a saved probe predicts exactly as before."""

import numpy as np
import pytest

from fracsurv.metrics.images import CNNProbe, ms_ssim


def _bars(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Images whose bright bar's intensity is the target, on a noisy background."""
    target = rng.uniform(0.2, 0.9, n)
    images = []
    for t in target:
        im = rng.normal(0.15, 0.04, (32, 16))
        im[:, 6:10] += t
        images.append(np.clip(im, 0, 1).astype(np.float32))
    return images, target


@pytest.fixture(scope="module")
def probe_and_data():
    rng = np.random.default_rng(0)
    x_tr, y_tr = _bars(160, rng)
    x_te, y_te = _bars(40, rng)
    probe = CNNProbe((8, 16), epochs=15, blur_sigma=1.0, random_state=0).fit(x_tr, y_tr)
    return probe, x_te, y_te


def test_probe_reads_the_target_from_unseen_images(probe_and_data):
    probe, x_te, y_te = probe_and_data
    pred = probe.predict(x_te)
    assert pred.shape == (40,)
    r = np.corrcoef(pred, y_te)[0, 1]
    assert r > 0.9, r


def test_probe_round_trips_through_safetensors(probe_and_data, tmp_path):
    probe, x_te, _ = probe_and_data
    probe.save(tmp_path / "p.safetensors")
    again = CNNProbe.load(tmp_path / "p.safetensors")
    np.testing.assert_allclose(again.predict(x_te), probe.predict(x_te), rtol=1e-6, atol=1e-6)


def test_multi_target_probe_keeps_the_target_shape():
    rng = np.random.default_rng(1)
    x, y = _bars(24, rng)
    probe = CNNProbe((4, 8), epochs=1, random_state=0).fit(x, np.c_[y, 1 - y])
    assert probe.predict(x[:5]).shape == (5, 2)


def test_ms_ssim_is_one_for_identical_images_and_refuses_mismatched_batches():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, (3, 64, 32)).astype(np.float32)
    np.testing.assert_allclose(ms_ssim(a, a), 1.0, atol=1e-5)
    assert (ms_ssim(a, rng.uniform(0, 1, a.shape).astype(np.float32)) < 0.5).all()
    with pytest.raises(ValueError, match="differ in shape"):
        ms_ssim(a, a[:, :32])
