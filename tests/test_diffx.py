"""DiffXGenerator: prompts, shapes, determinism, the injection schedule, persistence."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from fracsurv.datasets import make_spine_cohort
from fracsurv.generative import (
    DIFFX_PRESETS,
    DiffXGenerator,
    PromptEncoder,
    format_prompt,
    injection_points,
)
from fracsurv.generative.prompts import tokenize
from fracsurv.nn.base import load_model
from fracsurv.scoring.aggregate import cell_groups

TINY = {**DIFFX_PRESETS["tiny"], "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def cohort():
    return make_spine_cohort(3, image_shape=(64, 32), random_state=5, dicom=False).frame


@pytest.fixture(scope="module")
def fitted(cohort):
    return DiffXGenerator(**TINY).fit(cohort)


def test_prompt_format_and_tokens():
    assert format_prompt("An image of {age} years old {sex}", 74.6, "F") == \
        "An image of 75 years old female"
    assert format_prompt("{age} {sex}", 60, 0) == "60 male"
    with pytest.raises(ValueError, match="sex"):
        format_prompt("{age} {sex}", 60, "unknown")
    enc = PromptEncoder("An image of {age} years old {sex}", dim=8)
    ids, values, is_num = tokenize(["An image of 75 years old female", "an image of 9 dogs"],
                                   enc.vocab, enc.length)
    assert is_num[0].sum() == 1 and values[0][is_num[0]][0] == 75
    assert ids[1, 4] == 2  # "dogs" is unknown
    with pytest.raises(ValueError, match="more than"):
        tokenize(["a " * 20], enc.vocab, enc.length)


def test_age_embeddings_are_distinct_and_ordered():
    torch.manual_seed(0)
    enc = PromptEncoder("An image of {age} years old {sex}", dim=16)
    ages = np.arange(50, 100, 5)
    ids, values, is_num = tokenize([f"An image of {a} years old male" for a in ages],
                                   enc.vocab, enc.length)
    with torch.no_grad():
        tok = enc.token_embeddings(torch.from_numpy(ids), torch.from_numpy(values))
        age_tok = tok[torch.from_numpy(is_num)]
        proj = age_tok @ enc.age_direction
        full = enc(["An image of 60 years old male", "An image of 61 years old male",
                    "An image of 60 years old female"])
    assert np.all(np.diff(proj.numpy()) > 0)
    assert (full[0] - full[1]).abs().max() > 1e-4 and (full[0] - full[2]).abs().max() > 1e-4


def test_transform_layout(fitted, cohort):
    out = fitted.transform(cohort)
    assert list(out.columns[:len(cohort.columns)]) == list(cohort.columns)
    n_h = len(fitted.horizons)
    for pos in range(len(cohort)):
        imgs = out["future_images"].iloc[pos]
        assert out["future_horizons"].iloc[pos] == [1.0, 5.0]
        assert len(imgs) == n_h * fitted.n_seeds
        assert all(im.shape == cohort["image"].iloc[pos].shape for im in imgs)
        assert all(0 <= im.min() and im.max() <= 1 for im in imgs)
        groups = cell_groups(imgs, n_seeds=fitted.n_seeds)
        assert len(groups) == n_h
    assert list(fitted.get_feature_names_out()[-2:]) == ["future_images", "future_horizons"]


def test_last_horizon_uses_the_followup_age(fitted, cohort):
    gen = clone(fitted).set_params(horizons=(1, "last"))
    gen.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    frame = cohort.copy()
    frame.loc[frame.index[1], "followup_age"] = np.nan
    out = gen.transform(frame)
    expect = round(float(frame["followup_age"].iloc[0] - frame["age"].iloc[0]), 2)
    assert out["future_horizons"].iloc[0] == [1.0, expect]
    assert out["future_horizons"].iloc[1] == [1.0]
    assert len(out["future_images"].iloc[1]) == gen.n_seeds


def test_seeds_are_reproducible_alone_and_differ(fitted, cohort):
    img, age = cohort["image"].iloc[0], cohort["age"].iloc[0]
    both = fitted.generate(img, age, "female", [1, 5], seeds=[0, 3])
    alone = fitted.generate(img, age, "female", [1, 5], seeds=[3])
    np.testing.assert_allclose(alone[:, 0], both[:, 1], atol=1e-4)
    assert np.abs(both[:, 0] - both[:, 1]).max() > 1e-3
    refit = DiffXGenerator(**TINY).fit(cohort)
    np.testing.assert_allclose(refit.generate(img, age, "female", [1], seeds=[3]),
                               alone[:1], atol=1e-4)


def test_injection_is_active_exactly_in_the_configured_steps(fitted, cohort):
    img, age = cohort["image"].iloc[0], cohort["age"].iloc[0]
    feats, attn = injection_points(fitted.module_.ldm2, 1, 1)
    assert feats == ["up_blocks.1.resnets.1.conv2"]
    assert attn and all(".attn1.to_q" in a or ".attn1.to_k" in a for a in attn)
    gen = clone(fitted).set_params(tau_f=0.5, tau_attn=1 / 3)
    gen.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    _, inj = gen.generate(img, age, "male", [1], seeds=[0], return_injector=True)
    n = gen.n_inference_steps
    steps = {name: sorted(s for s, m in inj.log if m == name) for name in feats + attn}
    assert steps[feats[0]] == list(range(round(0.5 * n)))
    assert all(steps[a] == list(range(round(n / 3))) for a in attn)
    assert {m for _, m in inj.log} == set(feats + attn)
    _, none = gen.generate(img, age, "male", [1], seeds=[0], inject=False, return_injector=True)
    assert none.log == []


def test_turning_injection_off_changes_the_output(fitted, cohort):
    img, age = cohort["image"].iloc[0], cohort["age"].iloc[0]
    on = fitted.generate(img, age, "female", [5], seeds=[1])
    off = fitted.generate(img, age, "female", [5], seeds=[1], inject=False)
    assert np.abs(on - off).mean() > 1e-3


def test_bad_injection_point_is_refused(fitted):
    with pytest.raises(ValueError, match="does not exist"):
        injection_points(fitted.module_.ldm2, 1, 7)


def test_save_load_reproduces_generation(fitted, cohort, tmp_path):
    img, age = cohort["image"].iloc[1], cohort["age"].iloc[1]
    path = fitted.save(tmp_path / "diffx")
    again = load_model(path)
    assert isinstance(again, DiffXGenerator)
    np.testing.assert_allclose(again.generate(img, age, "male", [1, 5], seeds=[2]),
                               fitted.generate(img, age, "male", [1, 5], seeds=[2]), atol=1e-5)
    np.testing.assert_allclose(again.reconstruct(img, age, "male"),
                               fitted.reconstruct(img, age, "male"), atol=1e-5)


def test_cache_dir_gives_references(fitted, cohort, tmp_path):
    gen = clone(fitted).set_params(cache_dir=str(tmp_path / "cache"))
    gen.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    out = gen.transform(cohort.iloc[:1])
    refs = out["future_images"].iloc[0]
    assert all(isinstance(r, str) and r.endswith(".npy") for r in refs)
    assert np.load(refs[0]).shape == cohort["image"].iloc[0].shape


def test_bad_rows_are_named(fitted, cohort):
    bad = cohort.iloc[:2].copy()
    bad.loc[bad.index[1], "age"] = np.nan
    with pytest.raises(ValueError, match=r"row 1 .*no valid age"):
        fitted.transform(bad)
    bad = cohort.iloc[:2].copy()
    bad["sex"] = ["female", "cat"]
    with pytest.raises(ValueError, match=r"sex: row 1"):
        fitted.transform(bad)
    with pytest.raises(ValueError, match="prompt_template"):
        DiffXGenerator(**{**TINY, "prompt_template": "no age here {sex}"}).fit(cohort)
    with pytest.raises(ValueError, match="divisible"):
        DiffXGenerator(**{**TINY, "input_shape": (30, 16)}).fit(cohort)
    with pytest.raises(ValueError, match="no column"):
        fitted.transform(pd.DataFrame({"image": [1]}))


def test_clone_keeps_parameters(fitted):
    c = clone(fitted)
    assert c.get_params() == fitted.get_params() and not hasattr(c, "module_")


def test_batched_patients_equal_one_at_a_time(fitted, cohort):
    imgs, ages = list(cohort["image"]), list(cohort["age"])
    sexes, hs = list(cohort["sex"]), [[1.0, 5.0], [2.0, 5.0], [1.0, 10.0]]
    many = fitted.generate_many(imgs, ages, sexes, hs, seeds=[0, 1])
    for p in range(len(imgs)):
        one = fitted.generate(imgs[p], ages[p], sexes[p], hs[p], seeds=[0, 1])
        np.testing.assert_allclose(many[p], one, atol=1e-4)
    gen = clone(fitted).set_params(generation_batch_size=1)
    gen.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    a, b = gen.transform(cohort), fitted.transform(cohort)
    np.testing.assert_allclose(np.stack(a["future_images"].iloc[2]),
                               np.stack(b["future_images"].iloc[2]), atol=1e-4)


def test_network_chunks_and_shared_first_step_do_not_change_the_images(fitted, cohort,
                                                                      monkeypatch):
    """CPU runs the UNet and the decoder on chunks of the batch, and runs the first
    step once for seeds that still share a latent: the images must be those of the
    whole-batch, one-seed-at-a-time computation."""
    from fracsurv.generative import sampling

    img, age = cohort["image"].iloc[1], cohort["age"].iloc[1]
    monkeypatch.setattr(sampling, "_CPU_UNET_PIXELS", 2 ** 30)
    monkeypatch.setattr(sampling, "_CPU_DECODE_PIXELS", 2 ** 30)
    whole = fitted.generate(img, age, "male", [1, 10], seeds=[0, 1, 2])
    imgs, ages, sexes = list(cohort["image"]), list(cohort["age"]), list(cohort["sex"])
    each = np.stack([fitted.generate(imgs[p], ages[p], sexes[p], [1.0, 5.0], seeds=[0, 1])
                     for p in range(3)])
    alone = np.stack([fitted.generate(img, age, "male", [1, 10], seeds=[s])[:, 0]
                      for s in range(3)], axis=1)
    monkeypatch.setattr(sampling, "_CPU_UNET_PIXELS", 1)  # one row per UNet pass
    monkeypatch.setattr(sampling, "_CPU_DECODE_PIXELS", 1)
    chunked = fitted.generate(img, age, "male", [1, 10], seeds=[0, 1, 2])
    # every patient's chunk receives its own patient's injected features
    np.testing.assert_allclose(fitted.generate_many(imgs, ages, sexes, [[1.0, 5.0]] * 3,
                                                    seeds=[0, 1]), each, atol=1e-5)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    np.testing.assert_allclose(chunked, alone, atol=1e-5)
    assert np.abs(chunked[:, 0] - chunked[:, 1]).max() > 1e-3  # the seeds still differ
    eta0 = clone(fitted).set_params(eta=0.0)
    eta0.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    det = eta0.generate(img, age, "male", [1, 10], seeds=[0, 1, 2])
    np.testing.assert_allclose(det[:, 1:], det[:, :1].repeat(2, axis=1), atol=1e-5)
    np.testing.assert_allclose(det[:, :1], eta0.generate(img, age, "male", [1, 10], seeds=[2]),
                               atol=1e-5)


def _stage_files(run, kind="done"):
    return {p.name.split("-")[0]: p for p in run.glob(f"*.{kind}.pt")}


def test_checkpoint_dir_keeps_finished_stages_and_reuses_them(cohort, tmp_path):
    """Each finished stage leaves its state; a second fit with the same data and
    parameters trains nothing and equals a fit without checkpoints."""
    from fracsurv.nn.callbacks import read_checkpoint

    X = cohort
    params = {**TINY, "ldm_epochs": 2}
    full = DiffXGenerator(**params).fit(X)
    ckpt = tmp_path / "ckpt"
    DiffXGenerator(**{**params, "checkpoint_dir": str(ckpt)}).fit(X)
    run = next(ckpt.iterdir())
    files = _stage_files(run)
    assert set(files) == {"autoencoder", "ldm1", "ldm2"} and len(list(run.iterdir())) == 3
    assert len(read_checkpoint(files["ldm2"])["losses"]) == 2
    # a second fit with the same data and parameters trains nothing and agrees
    again = DiffXGenerator(**{**params, "checkpoint_dir": str(ckpt)}).fit(X)
    for a, b in zip(again.module_.state_dict().values(), full.module_.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_checkpoints_extend_a_stage_and_keep_the_autoencoder(cohort, tmp_path, monkeypatch):
    """More LDM epochs train only the extra ones (the earlier losses kept); an LDM setting
    changed keeps the trained autoencoder."""
    params = {**TINY, "ldm_epochs": 2, "ldm1_epochs": 1, "checkpoint_dir": str(tmp_path)}
    first = DiffXGenerator(**params).fit(cohort)
    trained = []
    make_net = DiffXGenerator._make_net
    monkeypatch.setattr(DiffXGenerator, "_make_net", lambda self, *a, **k: trained.append(
        type(a[0]).__name__) or make_net(self, *a, **k))
    # 1. LDM-2 three epochs instead of two: LDM-2 trains one more epoch, LDM-1 again
    #    (it starts from LDM-2's weights), the autoencoder is kept
    gen = DiffXGenerator(**{**params, "ldm_epochs": 3}).fit(cohort)
    assert trained == ["DenoiseObjective", "DenoiseObjective"]
    assert gen.loss_history_["ldm2"][:2] == first.loss_history_["ldm2"]
    assert len(gen.loss_history_["ldm2"]) == 3 and len(gen.loss_history_["ldm1"]) == 1
    assert gen.loss_history_["autoencoder"] == first.loss_history_["autoencoder"]
    # 2. a different UNet width: both LDMs train, the autoencoder does not
    trained.clear()
    DiffXGenerator(**{**params, "unet_channels": (8, 16)}).fit(cohort)
    assert trained == ["DenoiseObjective", "DenoiseObjective"]
    run = next(tmp_path.iterdir())
    assert len(list(run.glob("autoencoder-*.done.pt"))) == 1
    # the extended LDM-2 replaced its two-epoch state; the other width has its own
    assert len(list(run.glob("ldm2-*.done.pt"))) == 2
    # 3. LDM-1 from scratch: LDM-2 is the same network either way, only LDM-1 trains
    trained.clear()
    DiffXGenerator(**{**params, "ldm_epochs": 3, "ldm1_init": "scratch"}).fit(cohort)
    assert trained == ["DenoiseObjective"]


def test_ldm2_is_the_same_whichever_way_ldm1_starts(cohort, fitted):
    """Each stage is seeded alike whatever the order, so LDM-2 (which the checkpoint key
    therefore does not tie to ``ldm1_init``) comes out identical."""
    scratch = DiffXGenerator(**{**TINY, "ldm1_init": "scratch"}).fit(cohort)
    for a, b in zip(scratch.module_.ldm2.state_dict().values(),
                    fitted.module_.ldm2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(
        scratch.module_.ldm1.state_dict().values(), fitted.module_.ldm1.state_dict().values(),
        strict=True))


def test_ldm1_starts_as_ldm2_and_the_lowres_channel_starts_at_zero():
    """warm_start_ldm1: before fine-tuning, LDM-1 computes what LDM-2 computes, whatever
    the low-resolution channel holds."""
    from fracsurv.generative.nets import make_unet, warm_start_ldm1

    torch.manual_seed(0)
    ldm2, ldm1 = make_unet(2, 2, (16, 16), 1, 16, 8), make_unet(3, 2, (16, 16), 1, 16, 8)
    z, cond = torch.randn(2, 2, 8, 4), torch.randn(2, 9, 16)
    with torch.no_grad():
        before = ldm1(torch.cat([z, torch.randn(2, 1, 8, 4)], 1), 10, cond).sample
        warm_start_ldm1(ldm1, ldm2)
        a = ldm1(torch.cat([z, torch.randn(2, 1, 8, 4)], 1), 10, cond).sample
        b = ldm2(z, 10, cond).sample
    torch.testing.assert_close(a, b)
    assert (before - b).abs().max() > 1e-3


def test_patched_autoencoder_works_on_pixel_blocks(cohort):
    """ae_patch=2 halves the latent size again (tiny: 2 x 2 = 4); generation keeps shapes."""
    gen = DiffXGenerator(**{**TINY, "ae_patch": 2, "input_shape": (32, 16)}).fit(cohort)
    x = gen._prep(cohort["image"].iloc[0])
    with torch.no_grad():
        z = gen.module_.encode(x)
        rec = gen.module_.decode(z)
    assert z.shape[-2:] == (8, 4) and gen.module_.factor == 4
    assert rec.shape == x.shape
    out = gen.generate(cohort["image"].iloc[0], 70, "female", [1, 5], seeds=[0, 1])
    assert out.shape == (2, 2, *cohort["image"].iloc[0].shape)
    with pytest.raises(ValueError, match="divisible by 8"):
        DiffXGenerator(**{**TINY, "ae_patch": 2, "input_shape": (28, 16)}).fit(cohort)


def test_baseline_referenced_guidance_leaves_horizon_zero_unguided(fitted, cohort):
    """With guidance_reference='baseline' the push is the age change only: at 0 years
    the guidance scale no longer matters; with the null reference it does."""
    img, age = cohort["image"].iloc[0], cohort["age"].iloc[0]

    def at(reference, scale, horizon):
        gen = clone(fitted).set_params(guidance_reference=reference, guidance_scale=scale)
        gen.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
        return gen.generate(img, age, "female", [horizon], seeds=[0])

    np.testing.assert_allclose(at("baseline", 1.0, 0), at("baseline", 7.0, 0), atol=1e-5)
    assert np.abs(at("null", 1.0, 0) - at("null", 7.0, 0)).max() > 1e-3
    assert np.abs(at("baseline", 1.0, 10) - at("baseline", 7.0, 10)).max() > 1e-3


def test_checkpoint_dir_resumes_a_stage_killed_mid_way(cohort, tmp_path, monkeypatch):
    """A fit that dies after LDM-2's first of two epochs resumes there: the next fit
    trains only the missing epoch and keeps the first epoch's loss."""
    from skorch.callbacks import Callback

    from fracsurv.generative import training
    from fracsurv.nn.callbacks import read_checkpoint

    class Die(Callback):
        def on_epoch_end(self, net, **kwargs):
            raise RuntimeError("killed")

    params = {**TINY, "ldm_epochs": 2, "checkpoint_dir": str(tmp_path)}
    real = training.DiffXTrainingMixin._train_stage

    def dying(self, stage, *args, **kwargs):
        if stage == "ldm2":
            make = self._make_net
            monkeypatch.setattr(self, "_make_net", lambda *a, callbacks=(), **k: make(
                *a, callbacks=[*callbacks, Die()], **k))
        return real(self, stage, *args, **kwargs)

    monkeypatch.setattr(training.DiffXTrainingMixin, "_train_stage", dying)
    with pytest.raises(RuntimeError, match="killed"):
        DiffXGenerator(**params).fit(cohort)
    run = next(tmp_path.iterdir())
    part = read_checkpoint(_stage_files(run, "epoch")["ldm2"])
    assert part["epoch"] == 1 and len(part["losses"]) == 1
    monkeypatch.setattr(training.DiffXTrainingMixin, "_train_stage", real)
    trained = []
    make_net = DiffXGenerator._make_net
    monkeypatch.setattr(DiffXGenerator, "_make_net", lambda self, *a, **k: trained.append(
        a[0]) or make_net(self, *a, **k))
    gen = DiffXGenerator(**params).fit(cohort)
    # LDM-2 resumed, then LDM-1, which starts from LDM-2's weights; not the autoencoder
    assert [type(t).__name__ for t in trained] == ["DenoiseObjective"] * 2
    assert len(gen.loss_history_["ldm2"]) == 2
    assert gen.loss_history_["ldm2"][0] == pytest.approx(part["losses"][0])
    assert "ldm2" not in _stage_files(run, "epoch") and "ldm2" in _stage_files(run)


def _ageing_toy(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Patients whose spine (a bright column) darkens by 0.012 a year, with their own texture."""
    rows = []
    for i in range(n):
        age = rng.uniform(50, 85)
        later = age + rng.uniform(3, 10)
        texture = rng.normal(0, 0.03, (32, 16))

        def image(a: float, texture: np.ndarray = texture) -> np.ndarray:
            im = 0.1 + texture
            im[:, 5:11] += 0.8 - 0.012 * (a - 50)
            return np.clip(im, 0, 1).astype(np.float32)

        rows.append({"image": image(age), "age": age, "sex": "FM"[i % 2],
                     "followup_image": image(later), "followup_age": later})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy_generator():
    """Trained on a toy whose spine darkens with age (long enough to reconstruct it)."""
    train = _ageing_toy(64, np.random.default_rng(0))
    return DiffXGenerator(**{**TINY, "ae_epochs": 8, "ldm_epochs": 25, "batch_size": 16,
                             "lr": 2e-3}).fit(train)


@pytest.mark.parametrize("reference", ["null", "baseline"])
def test_prompted_age_moves_the_image_the_way_ageing_does(toy_generator, reference):
    """A later prompt gives a darker spine, with either guidance reference."""
    gen = clone(toy_generator).set_params(guidance_reference=reference)
    gen.__dict__.update({k: v for k, v in toy_generator.__dict__.items() if k.endswith("_")})
    drops = []
    for _, row in _ageing_toy(4, np.random.default_rng(1)).iterrows():
        out = gen.generate(row["image"], 60.0, row["sex"], [0, 25], seeds=[0, 1])
        spine = out[:, :, :, 5:11].mean(axis=(1, 2, 3))  # per horizon, over seeds
        drops.append(spine[0] - spine[1])
    assert min(drops) > 0, drops
    assert np.mean(drops) > 0.02, drops


def test_strength_sets_how_deep_the_baseline_is_inverted(fitted):
    """strength s: the baseline is inverted through the first round(s x steps) DDIM steps
    and generation runs exactly those steps back, from the deepest one."""
    n = fitted.n_inference_steps
    for strength in (1.0, 0.5, 0.34):
        gen = clone(fitted).set_params(strength=strength)
        _, _, inversion, denoising = gen._timesteps()
        k = round(strength * n)
        assert len(inversion) == len(denoising) == k
        assert list(denoising.numpy()) == sorted(inversion.numpy(), reverse=True)
    assert clone(fitted).set_params(strength=1.0)._timesteps()[3][0] > \
        clone(fitted).set_params(strength=0.5)._timesteps()[3][0]


def test_detail_transfer_adds_back_exactly_what_the_autoencoder_loses(fitted, cohort):
    """detail_transfer: each future gains baseline - AE(baseline), the same for every
    horizon and seed (before clipping to [0, 1]); the seeds' draws are unchanged."""
    import torch

    img, age = cohort["image"].iloc[0], cohort["age"].iloc[0]

    def run(on):
        gen = clone(fitted).set_params(detail_transfer=on, output_shape=fitted._input_shape())
        gen.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
        return gen, gen.generate(img, age, "female", [1, 10], seeds=[0, 1])

    gen, plain = run(False)
    _, detailed = run(True)
    with torch.inference_mode():
        x = gen._prep(img)
        lost = ((x - gen.module_.decode(gen.module_.encode(x))) / 2)[0, 0].numpy()
    assert np.abs(lost).max() > 1e-2  # the tiny autoencoder does lose detail
    inside = (plain > 0.02) & (plain < 0.98) & (detailed > 0) & (detailed < 1)
    np.testing.assert_allclose((detailed - plain)[inside],
                               np.broadcast_to(lost, plain.shape)[inside], atol=1e-4)
