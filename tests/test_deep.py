"""Tests of vcfnb.deep: 2.5D stacks, torchvision-compatible weights, fine-tuning, features, Grad-CAM."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from vcfnb import deep

SIZE = 32  # small network input keeps these tests fast


@pytest.fixture(scope="module")
def model0() -> deep.ResNet50:
    """One randomly initialised network shared by the tests (building one costs ~0.5 s)."""
    return deep.resnet50(rng=0)


# --------------------------------------------------------------------------- 2.5D stacks
def _volume(rng, n=21, h=40, w=36, centre=9, k=4):
    """Slices with distinct content and a mask whose largest area is at ``centre``."""
    img = rng.normal(size=(n, h, w)) + np.arange(n)[:, None, None] * 3.0
    msk = np.zeros((n, h, w), np.uint8)
    for z in range(n):
        half = max(1, 8 - abs(z - centre))  # area shrinks away from the centre slice
        msk[z, 20 - half:20 + half, 18 - half // 2:18 + half // 2 + 1] = 1
    return img, msk


def _norm(a):
    z = (a - a.mean()) / a.std()
    return 2 * (z - z.min()) / (z.max() - z.min()) - 1


def test_stack_uses_largest_slice_and_neighbours(rng):
    img, msk = _volume(rng, centre=9)
    k = 4
    # box of the whole ROI in-plane; nearest resize to the crop's own size = no interpolation
    ys, xs = np.nonzero(msk.any(0))
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    assert crop[0].stop - crop[0].start == 16 and crop[1].stop - crop[1].start == 9
    x = deep.stack_25d(img, msk, k=k, size=16, mode="one_image", interpolation="nearest")
    assert x.shape == (1, 3, 16, 16)
    # width 9 → 16 with nearest: compare along the untouched axis via the column mapping
    cols = np.floor((np.arange(16) + 0.5) * 9 / 16).astype(int)
    for ch, z in enumerate((9 - k, 9, 9 + k)):
        expected = _norm(img[z][crop])[:, cols]
        np.testing.assert_allclose(x[0, ch].numpy(), expected, atol=1e-5)


def test_stack_shapes_modes_range_and_sitk_input(rng):
    img, msk = _volume(rng)
    x3 = deep.stack_25d(img, msk, k=3, size=SIZE, margin=2)
    x1 = deep.stack_25d(img, msk, k=3, size=SIZE, margin=2, mode="one_image")
    assert x3.shape == (3, 3, SIZE, SIZE) and x1.shape == (1, 3, SIZE, SIZE)
    assert x3.dtype == torch.float32
    for x in (x3, x1):
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        assert float(x.min()) < -0.9 and float(x.max()) > 0.9  # full range used
    # three_images: each image repeats its slice in the 3 channels, = the one_image channels
    assert torch.equal(x3[:, 0], x3[:, 1]) and torch.equal(x3[:, 0], x3[:, 2])
    torch.testing.assert_close(x3[:, 0], x1[0])
    # a SimpleITK image gives the same stack; inputs untouched
    before = img.copy()
    xs = deep.stack_25d(sitk.GetImageFromArray(img), sitk.GetImageFromArray(msk), k=3,
                        size=SIZE, margin=2)
    torch.testing.assert_close(xs, x3)
    np.testing.assert_array_equal(img, before)


def test_stack_edge_clipping_label_and_errors(rng):
    img, msk = _volume(rng, n=12, centre=1)
    x = deep.stack_25d(img, msk, k=5, size=SIZE, mode="one_image", interpolation="nearest")
    # slices [1-5, 1, 1+5] → [0, 1, 6]: the first is clipped to slice 0
    moved = img.copy()
    moved[1] = img[0]
    ref = deep.stack_25d(moved, msk, k=5, size=SIZE, mode="one_image", interpolation="nearest")
    torch.testing.assert_close(x[0, 0], ref[0, 1])
    assert not torch.allclose(x[0, 0], x[0, 1])
    two = msk * 2
    torch.testing.assert_close(deep.stack_25d(img, two, k=2, size=SIZE, label=2),
                               deep.stack_25d(img, msk, k=2, size=SIZE))
    with pytest.raises(ValueError, match="empty"):
        deep.stack_25d(img, np.zeros_like(msk), size=SIZE)
    with pytest.raises(ValueError, match="shape"):
        deep.stack_25d(img, msk[:5], size=SIZE)
    with pytest.raises(ValueError, match="mode"):
        deep.stack_25d(img, msk, size=SIZE, mode="rgb")


# --------------------------------------------------------------------------- backbone / weights
def test_backbone_matches_torchvision_resnet50_layout(model0):
    m = model0
    sd = m.state_dict()
    # torchvision resnet50: 320 state-dict entries, 25,557,032 parameters with its 1000-class fc
    assert len(sd) == 320
    n_par = sum(p.numel() for p in m.parameters())
    assert n_par == 25_557_032 - (2048 * 1000 + 1000) + (2048 + 1)
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.num_batches_tracked", "layer3.5.conv2.weight",
                "layer4.2.bn3.bias", "fc.weight", "fc.bias"):
        assert key in sd
    assert tuple(sd["fc.weight"].shape) == (1, 2048)
    assert m.weights_source == deep.RANDOM_INIT
    assert "no pretrained weights" in m.weights_source


def _torchvision_format(model: deep.ResNet50, rng) -> dict:
    """A state dict laid out like torchvision's ImageNet resnet50 (1000-class fc)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(int(rng.integers(1000)))
    sd["fc.weight"] = torch.randn(1000, 2048, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    # make the batch-norm statistics non-trivial so a wrong load would show
    for k in sd:
        if k.endswith("running_mean"):
            sd[k] = torch.randn(sd[k].shape, generator=g) * 0.1
        elif k.endswith("running_var"):
            sd[k] = torch.rand(sd[k].shape, generator=g) + 0.5
    return sd


def test_weights_roundtrip_torchvision_format(tmp_path, rng):
    src = deep.resnet50(rng=1)
    sd = _torchvision_format(src, rng)
    src.load_state_dict({**sd, "fc.weight": src.fc.weight, "fc.bias": src.fc.bias})
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    variants = {
        "plain.pth": sd,
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "model_prefix_old.pth": {"model": {f"model.{k}": v for k, v in sd.items()
                                           if not k.endswith("num_batches_tracked")}},
    }
    other = deep.resnet50(rng=2)
    with torch.no_grad():
        ref = src.eval().features(x)
        assert not torch.allclose(other.features(x), ref)
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        loaded = deep.load_weights(other, tmp_path / name)
        with torch.no_grad():
            torch.testing.assert_close(loaded.features(x), ref, rtol=0, atol=0)
        assert loaded.weights_source.startswith(f"ImageNet weights from {name}")
        # ImageNet's 1000-class head is replaced: the 1-logit head stays the model's own
        torch.testing.assert_close(loaded.fc.weight, other.fc.weight)
    # the input model is not modified
    with torch.no_grad():
        assert not torch.allclose(other.features(x), ref)
    # resnet50(weights=...) loads too
    assert deep.resnet50(tmp_path / "plain.pth").weights_source.startswith("ImageNet weights")


def test_save_load_full_roundtrip_and_errors(tmp_path):
    a = deep.resnet50(rng=3)
    path = deep.save_weights(a, tmp_path / "sub" / "w.pt")
    b = deep.load_weights(deep.resnet50(rng=4), path)
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert "trunk and 1-logit head" in b.weights_source
    sd = torch.load(path, weights_only=True)
    bad = dict(sd)
    bad["layer5.0.conv1.weight"] = bad.pop("layer4.0.conv1.weight")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="missing.*layer4.0.conv1.weight"):
        deep.load_weights(a, tmp_path / "bad.pt")
    shp = dict(sd)
    shp["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(shp, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match="shapes differ"):
        deep.load_weights(a, tmp_path / "shape.pt")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        deep.load_weights(a, tmp_path / "absent.pt")


# --------------------------------------------------------------------------- features / fine-tuning
def _toy_inputs(rng, n=12):
    y = np.array([0, 1] * (n // 2))
    x = rng.normal(scale=0.3, size=(n, 3, 1, SIZE, SIZE))
    x[y == 1, :, :, 8:20, 8:20] += 0.8
    x = np.clip(x, -1, 1).repeat(3, axis=2)
    return torch.tensor(x, dtype=torch.float32), y


def test_feature_names_match_paper_formula():
    names = deep.feature_names(3)
    assert len(names) == 3 * 2048 and len(set(names)) == len(names)
    # names that occur in seed 001's DLR-score formula
    for n in ("DL_537.2", "DL_1682.2", "DL_161.1", "DL_1805", "DL_363", "DL_2011.1"):
        assert n in names
    assert names[0] == "DL_0" and names[2048] == "DL_0.1" and names[-1] == "DL_2047.2"
    explicit = deep.feature_names(3, style="explicit")
    assert explicit[0] == "DL_0.0" and explicit[537 + 2 * 2048] == "DL_537.2"
    assert deep.feature_names(1) == [f"DL_{i}" for i in range(2048)]
    # paper naming = pandas' de-duplication of three blocks named DL_0..DL_2047
    dup = pd.DataFrame(np.zeros((1, 3 * 2048)), columns=[f"DL_{i}" for i in range(2048)] * 3)
    from pandas.io.common import dedup_names
    assert list(dedup_names(list(dup.columns), is_potential_multiindex=False)) == names


def test_finetune_features_deterministic_and_aligned(rng, model0):
    x, y = _toy_inputs(rng)
    ids = [f"P{i:02d}" for i in range(len(y))]
    kw = dict(params="smoke", epochs=2, batch_size=8, progress=False, augmentation="flip_shift",
              aug_copies=1, val_fraction=0.25, patience=2)
    m0 = model0
    f1 = deep.finetune(m0, x, y, rng=11, **kw)
    f2 = deep.finetune(m0, x, y, rng=11, **kw)
    f3 = deep.finetune(m0, x, y, rng=12, **kw)  # another seed: another inner split and order
    pd.testing.assert_frame_equal(f1.log.drop(columns="seconds"), f2.log.drop(columns="seconds"))
    assert list(f1.log.columns) == ["epoch", "train_loss", "val_loss", "val_auc", "seconds"]
    assert f1.log["val_loss"].notna().all()
    # inner validation split is stratified and disjoint from the inner training cases
    assert set(f1.train_index).isdisjoint(f1.val_index)
    assert sorted(np.r_[f1.train_index, f1.val_index]) == list(range(len(y)))
    assert set(y[f1.val_index]) == {0, 1}
    a = deep.extract_features(f1.model, x, ids, progress=False)
    b = deep.extract_features(f2.model, x, ids, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert not torch.allclose(f1.model.fc.weight, f3.model.fc.weight)
    assert a.shape == (12, 3 * 2048) and list(a.index) == ids and a.index.name == "patient_id"
    assert list(a.columns) == deep.feature_names(3)
    assert np.isfinite(a.to_numpy()).all()
    # fine-tuning did not touch the starting model; frozen trunk (up to layer3) unchanged
    for k in ("conv1.weight", "layer3.5.conv3.weight"):
        torch.testing.assert_close(f1.model.state_dict()[k], m0.state_dict()[k])
    assert not torch.equal(f1.model.state_dict()["layer4.2.conv3.weight"],
                           m0.state_dict()["layer4.2.conv3.weight"])
    p = deep.dl_model_scores(f1.model, x, ids)
    assert p.index.equals(a.index) and p.between(0, 1).all()


def test_finetune_unfrozen_and_one_image_mode(rng, model0):
    x, y = _toy_inputs(rng, n=8)
    x1 = x[:, :1]
    ft = deep.finetune(model0, x1, y, params="smoke", epochs=1,
                       frozen_layers="none", augmentation="flip", val_fraction=0, progress=False)
    assert len(ft.log) == 1 and ft.log["val_loss"].isna().all() and len(ft.val_index) == 0
    assert not torch.equal(ft.model.conv1.weight, model0.conv1.weight)
    f = deep.extract_features(ft.model, x1, progress=False)
    assert list(f.columns) == [f"DL_{i}" for i in range(2048)]
    with pytest.raises(ValueError, match="labels"):
        deep.finetune(model0, x, y[:3], params="smoke", progress=False)
    with pytest.raises(ValueError, match="0/1"):
        deep.finetune(model0, x, y + 1, params="smoke", progress=False)


def test_presets_and_validation():
    assert deep.preset("paper").size == 224 and deep.preset("paper").epochs == 50
    assert deep.preset("paper").batch_size == 32 and deep.preset("paper").k == 5
    assert deep.preset({"preset": "fast", "epochs": 2}).epochs == 2
    with pytest.raises(ValueError, match="unknown deep preset"):
        deep.preset("huge")
    with pytest.raises(ValueError, match="frozen_layers"):
        deep.preset("fast", frozen_layers="layer9")
    with pytest.raises(TypeError):
        deep.preset("fast", epoch=3)


def _write_cohort(folder, rng, n=10):
    rows, labels = [], {}
    for i in range(n):
        img, msk = _volume(rng, n=14, centre=6 + i % 3)
        im = sitk.GetImageFromArray(img.astype(np.float32))
        im.SetSpacing((0.9, 0.9, 3.5))
        mk = sitk.GetImageFromArray(msk)
        mk.CopyInformation(im)
        sitk.WriteImage(im, str(folder / f"img{i}.nii.gz"))
        sitk.WriteImage(mk, str(folder / f"msk{i}.nii.gz"))
        rows.append({"patient_id": f"C{i}", "roi": "L1", "sequence": "T2", "reader": 1,
                     "image": f"img{i}.nii.gz", "mask": f"msk{i}.nii.gz", "label": 1})
        labels[f"C{i}"] = i % 2
    return pd.DataFrame(rows), pd.Series(labels)


def test_deep_features_for_cohort(tmp_path, rng):
    rois, labels = _write_cohort(tmp_path, rng)
    train = [f"C{i}" for i in range(6)]
    # only training labels are given: the test cases' outcome is never needed
    res = deep.deep_features_for_cohort(rois, labels[train], train, root=tmp_path,
                                        params=deep.preset("smoke", size=SIZE, epochs=2), rng=0,
                                        progress=False)
    assert res.features.shape == (10, 3 * 2048)
    assert list(res.features.index) == list(rois["patient_id"])
    assert res.weights_source == deep.RANDOM_INIT
    assert res.stacks.shape == (10, 3, 3, SIZE, SIZE)
    assert (res.slices["slice_centre"].to_numpy() == [6 + i % 3 for i in range(10)]).all()
    assert res.scores.between(0, 1).all() and res.scores.index.equals(res.features.index)
    assert set(res.timings) >= {"stacks", "finetune", "features", "total", "cpu_total"}
    assert res.summary().loc[0, "n_train_cases"] == 6
    # the fast path (cached frozen trunk) gives the same features as a plain extraction
    direct = deep.extract_features(res.model, res.stacks, res.features.index, progress=False)
    np.testing.assert_allclose(direct.to_numpy(), res.features.to_numpy(), rtol=1e-4, atol=1e-5)
    cam = res.gradcam("C7")
    assert cam.shape == (3, SIZE, SIZE)
    with pytest.raises(ValueError, match="training ids without an ROI row"):
        deep.deep_features_for_cohort(rois, labels, ["C1", "nobody"], root=tmp_path,
                                      params=deep.preset("smoke", size=SIZE, epochs=1),
                                      progress=False)
    broken = rois.copy()
    broken.loc[3, "mask"] = "nothere.nii.gz"
    with pytest.raises(ValueError, match="patient C3.*nothere"):
        deep.deep_features_for_cohort(broken, labels, train, root=tmp_path,
                                      params=deep.preset("smoke", size=SIZE, epochs=1),
                                      progress=False)


# --------------------------------------------------------------------------- Grad-CAM
@pytest.fixture(scope="module")
def brightness_net() -> deep.ResNet50:
    """A ResNet50 whose evidence for class 1 is local brightness (residual branches switched off).

    conv1 averages the input over 7×7 into channel 0, every downsample path passes channel 0
    through, every bottleneck's last BN is zero (blocks = identity), and the head reads channel 0.
    Layer-4 cell j then sees input pixel 32·j (± the 7×7 window).
    """
    m = deep.resnet50(rng=0)
    sd = m.state_dict()
    for k in sd:
        if k.endswith(("conv1.weight", "conv2.weight", "conv3.weight", "downsample.0.weight")):
            sd[k] = torch.zeros_like(sd[k])
        if k.endswith("running_mean") or k.endswith(".bias"):
            sd[k] = torch.zeros_like(sd[k])
        if k.endswith("running_var"):
            sd[k] = torch.ones_like(sd[k])
        if k.endswith("bn3.weight"):
            sd[k] = torch.zeros_like(sd[k])
        elif "bn" in k and k.endswith(".weight") or k.endswith("downsample.1.weight"):
            sd[k] = torch.ones_like(sd[k])
    sd["conv1.weight"][0] = 1.0 / (3 * 49)
    for k in sd:
        if k.endswith("downsample.0.weight"):
            sd[k][0, 0] = 1.0
    sd["fc.weight"] = torch.zeros(1, 2048)
    sd["fc.weight"][0, 0] = 1.0
    m.load_state_dict(sd)
    return m.eval()


@pytest.mark.parametrize("centre", [(72, 72), (40, 104), (104, 40)])
def test_gradcam_peaks_in_bright_blob(rng, centre, brightness_net):
    s, r = 128, 20
    yy, xx = np.mgrid[:s, :s]
    blob = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r
    img = rng.normal(0, 0.05, (s, s)) - 0.5
    img[blob] += 1.2
    x = torch.tensor(np.repeat(img[None, None], 3, 1), dtype=torch.float32)
    cam = deep.gradcam(brightness_net, x, target=1)
    assert cam.shape == (1, s, s) and cam.dtype.kind == "f"
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    py, px = np.unravel_index(cam[0].argmax(), cam[0].shape)
    assert blob[py, px], f"Grad-CAM peak {(py, px)} outside the blob at {centre}"
    assert cam[0][blob].mean() > 3 * cam[0][~blob].mean()
    # no evidence against class 1 anywhere: the target-0 map is empty
    if centre == (72, 72):
        assert np.all(deep.gradcam(brightness_net, x, target=0) == 0)


@pytest.mark.slow
def test_gradcam_of_trained_head_prefers_blob():
    """A random trunk with a head fine-tuned to detect a blob: CAM mass sits on the blob."""
    g = np.random.default_rng(0)
    s, r = 128, 14
    yy, xx = np.mgrid[:s, :s]

    def image(c):
        a = g.normal(0, 0.25, (s, s))
        if c is not None:
            a[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r] += 1.5
        return np.clip(a, -1, 1)

    y = np.arange(40) % 2
    x = np.stack([np.repeat(image((g.integers(r, s - r), g.integers(r, s - r)) if lab else None)
                            [None, None], 3, 1) for lab in y])
    ft = deep.finetune(deep.resnet50(rng=0), torch.tensor(x, dtype=torch.float32), y,
                       params="smoke", size=s, frozen_layers="up_to_layer4", epochs=30, lr=1e-2,
                       val_fraction=0, patience=0, recalibrate_bn=True, progress=False)
    for c in [(48, 48), (80, 80), (30, 100), (100, 30)]:
        img = image(c)
        cam = deep.gradcam(ft.model, torch.tensor(np.repeat(img[None], 3, 0)[None],
                                                  dtype=torch.float32))[0]
        inside = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r
        assert cam[inside].mean() > 1.5 * cam[~inside].mean()


def test_plot_gradcam_and_log(rng):
    from matplotlib.axes import Axes

    from vcfnb.plots_deep import plot_gradcam, plot_training_log

    imgs = torch.tensor(rng.normal(size=(2, 3, 3, 24, 24)), dtype=torch.float32)
    cams = rng.random((2, 3, 24, 24))
    ax = plot_gradcam(imgs, cams, row_labels=["a", "b"])
    assert isinstance(ax, Axes) and len(ax.images) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["centre−k", "centre", "centre+k"]
    ax1 = plot_gradcam(imgs[0, 1, 0].numpy(), cams[0, 1])
    assert isinstance(ax1, Axes)
    with pytest.raises(ValueError, match="do not match"):
        plot_gradcam(imgs, cams[:, :2])
    log = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.69, 0.6],
                        "val_auc": [0.5, 0.7], "seconds": [1.0, 1.0]})
    assert isinstance(plot_training_log(log), Axes)


def test_25d_neighbours_are_a_distance_in_mm(tmp_path):
    """Seed 001 takes the slices 5 away after resampling to 1 mm: ±5 mm. On a native 3 mm
    sagittal grid that is ±2 slices (6 mm), not ±5 (15 mm)."""
    import pandas as pd

    arr = np.zeros((30, 40, 40), np.float32)
    arr[10:20] = np.arange(10, 20)[:, None, None]
    msk = np.zeros(arr.shape, np.uint8)
    msk[12:18, 10:30, 10:30] = 1
    msk[15, 5:35, 5:35] = 1  # the largest-area slice
    rows = []
    for spacing in (1.0, 3.0):
        img, m = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(msk)
        for x in (img, m):
            x.SetSpacing((0.8, 0.8, spacing))
        ip, mp = tmp_path / f"i{spacing:g}.nii.gz", tmp_path / f"m{spacing:g}.nii.gz"
        sitk.WriteImage(img, str(ip))
        sitk.WriteImage(m, str(mp))
        rows.append({"patient_id": f"p{spacing:g}", "image": str(ip), "mask": str(mp)})
    _, meta = deep.build_stacks(pd.DataFrame(rows), params=deep.preset("smoke"), progress=False)
    assert meta.loc["p1", "k_slices"] == 5 and meta.loc["p3", "k_slices"] == 2
    assert meta.loc["p3", "neighbour_distance_mm"] == pytest.approx(6.0)
    assert (meta.loc["p3", "slice_lo"], meta.loc["p3", "slice_hi"]) == (13, 17)
    _, old = deep.build_stacks(pd.DataFrame(rows), params=deep.preset("smoke", k_mm=None),
                               progress=False)
    assert old.loc["p3", "k_slices"] == 5  # the slice count of the old behaviour stays available


# --------------------------------------------------------------------------- out-of-fold DL chain
def _oof_cohort(tmp_path, rng, n=14):
    rois, labels = _write_cohort(tmp_path, rng, n=n)
    return rois, labels, [f"C{i}" for i in range(n - 4)]  # 10 training (5/5), 4 test


def test_deep_oof_fold_networks_never_see_their_fold(tmp_path, rng, monkeypatch):
    """Stacking without label leakage: every fine-tuning is instrumented (what `_finetune` really
    receives); fold network k never gets fold k's images or labels, each training patient's
    out-of-fold DL score and the chain fitted on its features come from that network, and the
    label-independent frozen trunk is computed once for all networks."""
    rois, labels, train = _oof_cohort(tmp_path, rng)
    calls, trunk_runs = [], []
    real_ft, real_run = deep._finetune, deep._run

    def spy_ft(model, inputs, y, *a, **kw):
        calls.append((inputs.clone(), np.asarray(y).copy()))
        return real_ft(model, inputs, y, *a, **kw)

    def spy_run(*a, **kw):
        trunk_runs.append(a[1].shape[0])
        return real_run(*a, **kw)

    monkeypatch.setattr(deep, "_finetune", spy_ft)
    monkeypatch.setattr(deep, "_run", spy_run)
    res = deep.deep_oof(rois, labels[train], train, folds=3, root=tmp_path, rng=3,
                        params=deep.preset("smoke", size=SIZE, epochs=1), progress=False)
    stacks, ids = res.full.stacks, list(res.full.slices.index)

    def who(inputs):  # the patients whose 2.5D stacks a fine-tuning received
        return [next(p for j, p in enumerate(ids) if torch.equal(x, stacks[j])) for x in inputs]

    assert len(calls) == 1 + 3 and trunk_runs == [len(ids) * 3]  # frozen trunk: once, every image
    assert sorted(who(calls[0][0])) == sorted(train)  # the full network: all training patients
    assert sorted(res.fold.index) == sorted(train) and set(res.fold) == {0, 1, 2}
    for k in range(3):
        held = set(res.fold.index[res.fold == k])
        got = who(calls[1 + k][0])
        assert held and held.isdisjoint(got), k  # fold k never reaches its own network
        assert sorted(got) == sorted(set(train) - held) == sorted(res.fold_train_ids[k])
        np.testing.assert_array_equal(calls[1 + k][1], labels[got].to_numpy())
    dl = res.dl_scores()
    for pid in train:
        k = res.fold[pid]
        assert dl.loc[pid, "fold"] == k
        assert dl.loc[pid, "oof"] == res.fold_scores[k][pid] != res.scores[pid]
    assert dl.loc[[c for c in ids if c not in train], "oof"].isna().all()
    # a downstream chain: fitted per fold on that fold network's features and the other folds
    seen = []

    def fit(features, fit_ids):
        seen.append((features, list(fit_ids)))
        return {"s": features["DL_0"] * 0 + len(seen)}  # score = which fit produced it

    frame = res.chain(fit)["s"]
    assert [f is res.fold_features[k] for k, (f, _) in enumerate(seen[:3])] == [True] * 3
    assert seen[3][0] is res.features and sorted(seen[3][1]) == sorted(train)
    for k in range(3):
        assert set(seen[k][1]).isdisjoint(res.fold.index[res.fold == k])
        assert (frame.loc[res.fold.index[res.fold == k], "oof"] == k + 1).all()
    test_ids = [c for c in ids if c not in train]
    assert (frame.loc[test_ids, "full"] == 4).all() and (frame.loc[test_ids, "fold_mean"] == 2).all()


def test_deep_oof_deterministic_and_full_network_unchanged(tmp_path, rng):
    """Same seed → identical folds, out-of-fold scores and features; the full network is the one
    deep_features_for_cohort fine-tunes with the same seed; too few patients per class for the
    folds are refused before any work."""
    rois, labels, train = _oof_cohort(tmp_path, rng)
    kw = dict(root=tmp_path, params=deep.preset("smoke", size=SIZE, epochs=1), progress=False)
    a = deep.deep_oof(rois, labels[train], train, folds=3, rng=5, **kw)
    b = deep.deep_oof(rois, labels[train], train, folds=3, rng=5, **kw)
    pd.testing.assert_frame_equal(a.dl_scores(), b.dl_scores())
    for fa, fb in zip(a.fold_features, b.fold_features):
        pd.testing.assert_frame_equal(fa, fb)
    single = deep.deep_features_for_cohort(rois, labels[train], train, rng=5, **kw)
    pd.testing.assert_frame_equal(a.features, single.features)
    assert not a.fold_features[0].equals(a.features)  # the fold networks are other networks
    summ = a.summary()
    assert list(summ.network) == ["all training patients"] + [f"fold {k} of 3 held out"
                                                               for k in (1, 2, 3)]
    assert summ.n_train_cases.tolist() == [10] + [len(i) for i in a.fold_train_ids]
    assert set(a.logs().network) == {"all training patients", "fold 1", "fold 2", "fold 3"}
    with pytest.raises(ValueError, match="at least 6 training patients per class"):
        deep.deep_oof(rois, labels[train], train, folds=6, rng=5, **kw)
