"""2.5D deep-learning features: ResNet50 on max-slice ±k stacks, fine-tuning, Grad-CAM.

Seed 001's DL arm (Liang et al. 2025, Front. Oncol. 15:1603672, §2.5) as plain PyTorch:

1. :func:`stack_25d` — per case, the sagittal slice with the largest ROI area and the slices
   ``±k`` away, cropped to the ROI bounding box, z-scored then min-max scaled to [-1, 1] and
   resized to ``size × size``;
2. :func:`resnet50` — a torchvision-compatible ResNet50 (He et al. 2016, Bottleneck [3, 4, 6, 3])
   whose 1000-class ``fc`` is replaced by a 1-logit head; a torchvision ImageNet state dict loads
   with strict key matching (:func:`load_weights`); nothing is ever downloaded;
3. :func:`finetune` — binary fine-tuning on training cases only, early stopping on an inner
   validation split of those training cases, deterministic on CPU under a seed;
4. :func:`extract_features` — 2048-d global-average-pool features per slice, columns named like the
   paper (``DL_537``, ``DL_537.1``, ``DL_537.2``);
5. :func:`gradcam` — Grad-CAM (Selvaraju et al. 2017) of the last residual block (``layer4``).

:func:`deep_features_for_cohort` runs the whole arm on a cohort's ROI table in one call. What the
paper's text supports and where vcfnb deviates is documented in ``docs/deep.md``.

Everything runs on the CPU; CUDA is used automatically when available (``device=None``).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

from vcfnb.preprocess import bbox_slices, largest_area_slices
from vcfnb.rng import draw_state, generator

__all__ = [
    "RANDOM_INIT", "STAGES", "PRESETS", "DeepParams", "preset", "ResNet50", "resnet50",
    "load_weights", "save_weights", "stack_25d", "build_stacks", "augment", "finetune",
    "FineTuned", "extract_features", "predict_proba", "dl_model_scores", "gradcam",
    "deep_features_for_cohort", "DeepResult", "feature_names", "deep_oof", "DeepOOF",
]

#: ``weights_source`` of a model that did not start from a weights file.
RANDOM_INIT = "random initialisation — no pretrained weights file given"

#: Trunk stages in forward order; ``frozen_layers`` freezes a prefix of them.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
_FROZEN = {"none": 0, "stem": 1, "up_to_layer1": 2, "up_to_layer2": 3, "up_to_layer3": 4,
           "up_to_layer4": 5}


# ---------------------------------------------------------------------------------------------
# parameters and presets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeepParams:
    """All parameters of the 2.5D DL arm (see ``docs/deep.md``).

    Attributes
    ----------
    k : int
        Distance (slices) of the two neighbours of the largest-area slice, used when ``k_mm`` is
        None.
    k_mm : float or None
        Distance of the two neighbours in millimetres (paper: 5 slices after resampling to
        1 mm, i.e. 5 mm): on each scan ``k = max(1, round(k_mm / slice spacing))``, so a 3 mm
        sagittal series takes the neighbours 2 slices (6 mm) away, not 5 (15 mm).
    size : int
        Side of the square network input in pixels (paper: 224).
    margin : int
        Voxels added around the ROI's in-plane bounding box before cropping (paper: 0, "minimal
        bounding box").
    mode : {"three_images", "one_image"}
        ``three_images``: each slice is its own 3-channel image (grey value repeated) → 3 × 2048
        features (what the paper's "702 (234×3) images" and "2048 features for each of the three
        channels" describe); ``one_image``: the three slices are the RGB channels of one image.
    interpolation : {"bilinear", "nearest"}
        Resize interpolation (paper: nearest neighbour).
    axis : int
        Array axis (of ``sitk.GetArrayFromImage``) along which sagittal slices are taken.
    epochs, batch_size, lr, weight_decay
        Optimiser settings (AdamW; paper: 50 epochs, batch 32; optimiser and lr not reported).
    frozen_layers : str
        ``"none"``, ``"stem"``, ``"up_to_layer1"`` … ``"up_to_layer4"`` (only the head trains).
    augmentation : {"none", "flip", "shift", "flip_shift"}
        Random anterior-posterior/superior-inferior flips and integer shifts up to ``max_shift``
        (fraction of the side).
    aug_copies : int
        With frozen layers the frozen trunk's outputs are computed once per training image for the
        original and ``aug_copies`` augmented versions, and each epoch samples one of them
        (offline augmentation; exact for the frozen trunk and far cheaper than re-running it).
    val_fraction, patience
        Inner validation split of the training cases (stratified) and early-stopping patience in
        epochs (0 = no early stopping; the best-validation-loss weights are restored).
    balanced : bool
        Weight the positive class by n_negative / n_positive in the loss.
    recalibrate_bn : bool or None
        Re-estimate frozen batch-norm statistics on the training images (None: only when the model
        is randomly initialised, whose default statistics are meaningless).
    batch_size_eval : int
        Batch size of feature extraction (under ``torch.no_grad``).
    n_threads : int or None
        Torch CPU threads during the run (None: leave torch's setting).
    """

    k: int = 5
    k_mm: float | None = 5.0
    size: int = 112
    margin: int = 0
    mode: str = "three_images"
    interpolation: str = "bilinear"
    axis: int = 0
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    frozen_layers: str = "up_to_layer3"
    augmentation: str = "flip_shift"
    aug_copies: int = 1
    max_shift: float = 0.08
    val_fraction: float = 0.2
    patience: int = 3
    balanced: bool = True
    recalibrate_bn: bool | None = None
    batch_size_eval: int = 64
    n_threads: int | None = None

    def replace(self, **changes: Any) -> DeepParams:
        """A copy with ``changes`` applied (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)


#: ``paper`` follows seed 001's text (224², 50 epochs, batch 32, nothing frozen, nearest-neighbour
#: resize) and takes hours on a 2-core CPU; ``fast`` is vcfnb's default (112², layers up to
#: layer3 frozen, ≤ 8 epochs with early stopping) and runs the 234-case arm in minutes.
PRESETS: dict[str, DeepParams] = {
    "paper": DeepParams(size=224, epochs=50, batch_size=32, frozen_layers="none",
                        interpolation="nearest", lr=1e-4, patience=0, val_fraction=0.0,
                        augmentation="flip_shift", aug_copies=0),
    "fast": DeepParams(),
    "smoke": DeepParams(size=64, epochs=3, patience=0, aug_copies=0, augmentation="none"),
}


def preset(name: str | DeepParams | dict | None = "fast", **overrides: Any) -> DeepParams:
    """Parameters of a named preset (``paper``, ``fast``, ``smoke``) with ``overrides`` applied.

    A dict may carry the preset under ``"preset"`` plus overrides (how a params YAML passes it).

    Examples
    --------
    >>> preset("fast", epochs=3).epochs
    3
    """
    if isinstance(name, DeepParams):
        base = name
    elif isinstance(name, dict):
        d = dict(name)
        base = preset(d.pop("preset", "fast"))
        overrides = {**d, **overrides}
    else:
        key = name or "fast"
        if key not in PRESETS:
            raise ValueError(f"unknown deep preset {key!r}; choose one of {sorted(PRESETS)}")
        base = PRESETS[key]
    p = base.replace(**overrides)
    if p.mode not in ("three_images", "one_image"):
        raise ValueError(f"mode must be 'three_images' or 'one_image', got {p.mode!r}")
    if p.frozen_layers not in _FROZEN:
        raise ValueError(f"frozen_layers must be one of {list(_FROZEN)}, got {p.frozen_layers!r}")
    if p.augmentation not in ("none", "flip", "shift", "flip_shift"):
        raise ValueError(f"unknown augmentation {p.augmentation!r}")
    if p.interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {p.interpolation!r}")
    return p


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
_rng = generator
_seed = draw_state


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _deterministic(n_threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count inside the block, restored after."""
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    old_cudnn = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    if n_threads:
        torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.backends.cudnn.benchmark = old_cudnn
        if n_threads:
            torch.set_num_threads(old_threads)


def _progress(iterable, *, total: int | None = None, desc: str = "", enabled: bool = True):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


# ---------------------------------------------------------------------------------------------
# backbone
# ---------------------------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet50 (Bottleneck blocks [3, 4, 6, 3]) with torchvision's parameter names and a 1-logit head.

    ``forward`` returns the logit (shape ``(n,)``); :meth:`features` the 2048-d global-average-pool
    output. ``weights_source`` says in words where the weights came from. Build it with
    :func:`resnet50`.

    References
    ----------
    He K, Zhang X, Ren S, Sun J. Deep residual learning for image recognition. CVPR 2016.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, 1)
        self.weights_source = RANDOM_INIT
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4))
        layers = [_Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [_Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stage(self, name: str) -> nn.Module:
        """The trunk stage ``name`` (one of :data:`STAGES`)."""
        if name == "stem":
            return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return getattr(self, name)

    def run_stages(self, x: torch.Tensor, start: int = 0, stop: int = len(STAGES)) -> torch.Tensor:
        """Apply trunk stages ``STAGES[start:stop]`` to ``x``."""
        for name in STAGES[start:stop]:
            x = self.stage(name)(x)
        return x

    def head(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """From the output of stage ``start - 1``: (2048-d pooled features, logits)."""
        feats = torch.flatten(self.avgpool(self.run_stages(x, start)), 1)
        return feats, self.fc(feats).squeeze(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """2048-d global-average-pool features of images ``x`` (n, 3, H, W)."""
        return self.head(x, 0)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x, 0)[1]


def resnet50(weights: str | os.PathLike | None = None, *,
             rng: int | np.random.Generator | None = 0) -> ResNet50:
    """A ResNet50 with a 1-logit head: random (seeded) initialisation, then ``weights`` if given.

    Parameters
    ----------
    weights : path, optional
        A local torchvision-format ``resnet50`` state dict (see :func:`load_weights`); nothing is
        downloaded. None or ``""`` leaves the random initialisation and ``weights_source`` says so.
    rng : int, Generator or None
        Seed of the random initialisation (the head is always random when ImageNet weights are
        loaded, as its 1000-class ``fc`` is replaced).

    Examples
    --------
    >>> m = resnet50(rng=0)
    >>> m.weights_source
    'random initialisation — no pretrained weights file given'
    """
    seed = _seed(_rng(rng))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet50()
    if weights:
        model = load_weights(model, weights)
    return model.eval()


def _unwrap_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors (a dict name → tensor, possibly "
                         "under 'state_dict' or 'model')")
    keys = list(obj)
    for prefix in ("module.", "model.", "backbone.", "encoder."):
        while keys and all(k.startswith(prefix) for k in keys):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
            keys = list(obj)
    return obj


def load_weights(model: ResNet50, path: str | os.PathLike) -> ResNet50:
    """A copy of ``model`` with the weights of a local state-dict file.

    Accepts a torchvision ``resnet50`` state dict (ImageNet; its 1000-class ``fc`` is dropped and
    the 1-logit head kept), a dict holding it under ``state_dict``/``model``, keys prefixed by
    ``module.``/``model.``, or a file written by :func:`save_weights` (head included). All trunk
    keys must match exactly (``num_batches_tracked`` may be absent, as in old torchvision files);
    otherwise a ``ValueError`` lists the differences. The file is read with
    ``torch.load(weights_only=True)``: nothing in it is executed.

    Examples
    --------
    >>> import tempfile, os
    >>> m = resnet50(rng=1)
    >>> p = save_weights(m, os.path.join(tempfile.mkdtemp(), "w.pt"))
    >>> load_weights(resnet50(rng=2), p).weights_source.startswith("weights from")
    True
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (vcfnb never downloads "
                                "weights; see docs/deep.md for how to obtain them)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report the file
        raise ValueError(f"{path}: cannot read as a torch state dict ({exc})") from exc
    sd = _unwrap_state_dict(raw, path)
    target = model.state_dict()
    trunk = [k for k in target if not k.startswith("fc.")]
    file_trunk = [k for k in sd if not k.startswith("fc.")]
    missing = [k for k in trunk if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in file_trunk if k not in target]
    if missing or unexpected:
        raise ValueError(f"{path}: state dict keys do not match a torchvision resnet50 — "
                         f"missing {missing[:5]}{' …' if len(missing) > 5 else ''} "
                         f"({len(missing)}), unexpected {unexpected[:5]}"
                         f"{' …' if len(unexpected) > 5 else ''} ({len(unexpected)})")
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
           for k in trunk if k in sd and sd[k].shape != target[k].shape]
    if bad:
        raise ValueError(f"{path}: tensor shapes differ: {bad[:5]}")
    new = {k: sd.get(k, target[k]) for k in trunk}
    head_from_file = ("fc.weight" in sd and "fc.bias" in sd
                      and tuple(sd["fc.weight"].shape) == tuple(target["fc.weight"].shape))
    for k in ("fc.weight", "fc.bias"):
        new[k] = sd[k] if head_from_file else target[k]
    out = copy.deepcopy(model)
    out.load_state_dict({k: v.to(target[k].dtype) for k, v in new.items()}, strict=True)
    name = Path(path).name
    if head_from_file:
        out.weights_source = f"weights from {name} (trunk and 1-logit head)"
    else:
        n_out = tuple(sd["fc.weight"].shape)[0] if "fc.weight" in sd else 0
        out.weights_source = (f"ImageNet weights from {name}" if n_out == 1000 else
                              f"pretrained weights from {name}") + " (new random 1-logit head)"
    return out


def save_weights(model: ResNet50, path: str | os.PathLike) -> Path:
    """Write ``model``'s state dict (torchvision key names, 1-logit ``fc``) to ``path``."""
    from vcfnb.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    return path


# ---------------------------------------------------------------------------------------------
# 2.5D inputs
# ---------------------------------------------------------------------------------------------
def _normalise_slice(a: np.ndarray) -> np.ndarray:
    """z-score then min-max to [-1, 1] (a constant slice becomes 0)."""
    a = a.astype(np.float64)
    sd = a.std()
    z = (a - a.mean()) / sd if sd > 0 else np.zeros_like(a)
    lo, hi = z.min(), z.max()
    if hi - lo <= 0:
        return np.zeros_like(z, dtype=np.float32)
    return (2.0 * (z - lo) / (hi - lo) - 1.0).astype(np.float32)


def _resize(a: np.ndarray, size: int, interpolation: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    if interpolation == "nearest":
        out = F.interpolate(t, size=(size, size), mode="nearest-exact")
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=True)
    return out[0, 0].clamp_(-1.0, 1.0)


def stack_25d(image: sitk.Image | np.ndarray, mask: sitk.Image | np.ndarray, *, k: int = 5,
              size: int = 224, margin: int = 0, mode: str = "three_images", axis: int = 0,
              label: int | None = None, interpolation: str = "bilinear") -> torch.Tensor:
    """2.5D network input of one case: largest-area slice and the slices ``±k`` away.

    Slices come from :func:`vcfnb.preprocess.largest_area_slices` (order: centre-k, centre,
    centre+k; neighbours clipped at the volume edge). Each is cropped to the in-plane bounding box
    of the whole 3D ROI (:func:`vcfnb.preprocess.bbox_slices`, plus ``margin`` voxels), z-scored,
    min-max scaled to [-1, 1] and resized to ``size × size``.

    Parameters
    ----------
    image, mask : SimpleITK.Image or ndarray
        Same grid. Arrays are indexed like ``sitk.GetArrayFromImage`` (z, y, x).
    k : int
        Neighbour distance in slices (paper: 5).
    size : int
        Output side in pixels (paper: 224).
    margin : int
        Extra voxels around the bounding box.
    mode : {"three_images", "one_image"}
        ``three_images`` → shape ``(3, 3, size, size)``: three images, each slice repeated in the
        three colour channels; ``one_image`` → ``(1, 3, size, size)``: the slices as channels.
    axis : int
        Slice axis of the array (0 = sitk z; sagittal for a sagittal acquisition).
    label : int, optional
        ROI value in the mask (default: any non-zero voxel).
    interpolation : {"bilinear", "nearest"}
        Resize interpolation (paper: nearest neighbour).

    Returns
    -------
    torch.Tensor
        float32 in [-1, 1], shape ``(n_images, 3, size, size)``.

    Examples
    --------
    >>> img = np.random.default_rng(0).normal(size=(20, 30, 30))
    >>> msk = np.zeros(img.shape, np.uint8); msk[8:13, 10:20, 5:25] = 1
    >>> stack_25d(img, msk, k=2, size=32).shape
    torch.Size([3, 3, 32, 32])
    """
    img = sitk.GetArrayFromImage(image) if isinstance(image, sitk.Image) else np.asarray(image)
    msk = sitk.GetArrayFromImage(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)
    if img.shape != msk.shape:
        raise ValueError(f"image shape {img.shape} and mask shape {msk.shape} differ")
    if img.ndim != 3:
        raise ValueError(f"need a 3D image, got shape {img.shape}")
    if mode not in ("three_images", "one_image"):
        raise ValueError(f"mode must be 'three_images' or 'one_image', got {mode!r}")
    roi = (msk == label) if label is not None else (msk != 0)
    idx = largest_area_slices(roi.astype(np.uint8), k=k, axis=axis)
    if len(idx) == 1:
        idx = idx * 3
    box = bbox_slices(roi.any(axis=axis), margin=margin)
    planes = [np.take(img, i, axis=axis)[box] for i in idx]
    chans = torch.stack([_resize(_normalise_slice(p), size, interpolation) for p in planes])
    if mode == "one_image":
        return chans[None].contiguous()
    return chans[:, None].expand(-1, 3, -1, -1).contiguous()


def _read_image(path: str) -> sitk.Image:
    try:
        from vcfnb.io import read_image
    except ImportError:  # io not there yet
        return sitk.ReadImage(str(path))
    return read_image(path)


def neighbour_slices(image: sitk.Image, params: DeepParams) -> int:
    """Neighbour distance in slices on this image: ``k_mm`` over the slice spacing along the
    slice axis (at least 1), or ``k`` when ``k_mm`` is None.

    Examples
    --------
    >>> img = sitk.Image(10, 10, 10, sitk.sitkFloat32); img.SetSpacing((0.7, 0.7, 3.0))
    >>> neighbour_slices(img, preset("fast")), neighbour_slices(img, preset("fast", k_mm=None))
    (2, 5)
    """
    if params.k_mm is None:
        return int(params.k)
    spacing = image.GetSpacing()[image.GetDimension() - 1 - params.axis]
    return max(1, int(round(float(params.k_mm) / spacing)))


def build_stacks(rois: pd.DataFrame, *, params: DeepParams | str | dict | None = "fast",
                 root: str | os.PathLike | None = None, reader: str | int | None = None,
                 sequence: str | None = None, progress: bool = True
                 ) -> tuple[torch.Tensor, pd.DataFrame]:
    """2.5D inputs of every case of a cohort ROI table (one ROI row per patient).

    Parameters
    ----------
    rois : DataFrame
        Cohort ROI rows (``patient_id``, ``image``, ``mask``, optional ``label``, ``reader``,
        ``sequence``, ``resample_mask``) as in :class:`vcfnb.io.Cohort`.
    params : DeepParams, preset name or dict
        Uses ``k``, ``size``, ``margin``, ``mode``, ``axis``, ``interpolation``.
    root : path, optional
        Folder that relative ``image``/``mask`` paths are relative to.
    reader, sequence : optional
        Keep only these rows (default reader: the first one listed for each patient).

    Returns
    -------
    (Tensor, DataFrame)
        Inputs of shape ``(n_cases, n_images, 3, size, size)`` and a table indexed by
        ``patient_id`` with the slice indices used (``slice_lo, slice_centre, slice_hi``) and the
        image file name.
    """
    p = preset(params)
    t = rois.copy()
    if sequence is not None and "sequence" in t:
        t = t[t["sequence"].astype(str) == str(sequence)]
    if reader is not None and "reader" in t:
        t = t[t["reader"].astype(str) == str(reader)]
    t = t.drop_duplicates("patient_id", keep="first")
    if t.empty:
        raise ValueError("no ROI rows left for the DL arm (check reader/sequence filters)")
    tensors, meta = [], []
    for _, row in _progress(t.iterrows(), total=len(t), desc="2.5D stacks", enabled=progress):
        pid = str(row["patient_id"])
        ipath, mpath = (Path(str(row[c])) for c in ("image", "mask"))
        if root is not None:
            ipath, mpath = (q if q.is_absolute() else Path(root) / q for q in (ipath, mpath))
        label = int(row["label"]) if "label" in row and pd.notna(row["label"]) else None
        try:
            image, mask = _read_image(str(ipath)), _read_image(str(mpath))
            if (image.GetSize() != mask.GetSize() or not np.allclose(
                    image.GetSpacing(), mask.GetSpacing(), atol=1e-3)
                    or not np.allclose(image.GetOrigin(), mask.GetOrigin(), atol=1e-3)
                    or not np.allclose(image.GetDirection(), mask.GetDirection(), atol=1e-3)):
                mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                     mask.GetPixelID())
            roi = sitk.GetArrayFromImage(mask)
            roi = (roi == label) if label is not None else roi != 0
            k = neighbour_slices(image, p)
            idx = largest_area_slices(roi.astype(np.uint8), k=k, axis=p.axis)
            x = stack_25d(image, roi.astype(np.uint8), k=k, size=p.size, margin=p.margin,
                          mode=p.mode, axis=p.axis, interpolation=p.interpolation)
        except Exception as exc:  # noqa: BLE001 - name case and file
            raise ValueError(f"2.5D stack of patient {pid} failed (image {ipath.name}, mask "
                             f"{mpath.name}): {exc}") from exc
        idx = idx * 3 if len(idx) == 1 else idx
        tensors.append(x)
        meta.append({"patient_id": pid, "slice_lo": idx[0], "slice_centre": idx[1],
                     "slice_hi": idx[2], "k_slices": k,
                     "neighbour_distance_mm": k * image.GetSpacing()[image.GetDimension() - 1
                                                                     - p.axis],
                     "image_file": ipath.name})
    return torch.stack(tensors), pd.DataFrame(meta).set_index("patient_id")


# ---------------------------------------------------------------------------------------------
# augmentation and fine-tuning
# ---------------------------------------------------------------------------------------------
def augment(x: torch.Tensor, kind: str = "flip_shift", *, max_shift: float = 0.08,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly flipped (both in-plane axes, p = 0.5 each) and shifted copies of images ``x``.

    Shifts are integers up to ``max_shift × side`` pixels per axis with edge replication.
    ``x`` has shape ``(n, c, h, w)`` and is not modified.
    """
    if kind == "none":
        return x.clone()
    n, _, h, w = x.shape
    out = x.clone()
    if "flip" in kind:
        fh = torch.rand(n, generator=generator) < 0.5
        fv = torch.rand(n, generator=generator) < 0.5
        out[fh] = out[fh].flip(-1)
        out[fv] = out[fv].flip(-2)
    if "shift" in kind:
        s = max(int(round(max_shift * min(h, w))), 0)
        if s > 0:
            pad = F.pad(out, (s, s, s, s), mode="replicate")
            dy = torch.randint(0, 2 * s + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * s + 1, (n,), generator=generator)
            out = torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return out


@dataclass
class FineTuned:
    """Result of :func:`finetune`.

    Attributes
    ----------
    model : ResNet50
        The fine-tuned copy (eval mode) with the best-validation-loss weights when early stopping
        was active, else the last epoch's.
    log : DataFrame
        One row per epoch: ``epoch, train_loss, val_loss, val_auc, seconds`` (validation columns
        NaN without an inner validation split; ``val_auc`` is per case, mean probability over its
        images).
    best_epoch : int
        Epoch whose weights were kept.
    train_index, val_index : ndarray
        Positions (in the inputs given) of the inner training and validation cases.
    weights_source : str
        Where the starting weights came from (copied from the model).
    """

    model: ResNet50
    log: pd.DataFrame
    best_epoch: int
    train_index: np.ndarray
    val_index: np.ndarray
    weights_source: str
    seconds_features: float = 0.0


def _as_cases(inputs: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(inputs)
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5 or x.shape[2] != 3:
        raise ValueError(f"inputs must have shape (n_cases, n_images, 3, H, W), got {tuple(x.shape)}")
    return x.float()


def _inner_split(y: np.ndarray, fraction: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(y))
    if fraction <= 0:
        return idx, idx[:0]
    val = []
    for c in (0, 1):
        members = idx[y == c]
        n_val = int(round(fraction * len(members)))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val.extend(rng.choice(members, size=n_val, replace=False).tolist())
    val = np.sort(np.array(val, dtype=int))
    return np.setdiff1d(idx, val), val


@torch.no_grad()
def _run(model: ResNet50, images: torch.Tensor, start: int, stop: int, batch_size: int,
         device: torch.device, progress: bool = False, desc: str = "") -> torch.Tensor:
    """Stages ``start:stop`` in eval mode, batched, result on CPU."""
    model.eval()
    out = []
    batches = range(0, len(images), batch_size)
    for b in _progress(batches, total=len(batches), desc=desc, enabled=progress):
        out.append(model.run_stages(images[b:b + batch_size].to(device), start, stop).cpu())
    return torch.cat(out) if out else images[:0]


@torch.no_grad()
def _recalibrate_bn(model: ResNet50, images: torch.Tensor, n_frozen: int, batch_size: int,
                    device: torch.device) -> None:
    """Cumulative batch-norm statistics of the frozen stages on ``images`` (in place)."""
    bns = [m for s in STAGES[:n_frozen] for m in model.stage(s).modules()
           if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    frozen = nn.Sequential(*[model.stage(s) for s in STAGES[:n_frozen]]).train()
    for b in range(0, len(images), batch_size):
        frozen(images[b:b + batch_size].to(device))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _finetune(model: ResNet50, inputs: torch.Tensor, y: np.ndarray, p: DeepParams,
              rng: np.random.Generator, device: torch.device, progress: bool,
              cached: torch.Tensor | None = None) -> tuple[FineTuned, torch.Tensor | None]:
    """Core of :func:`finetune`; ``cached`` = frozen-trunk outputs of ``inputs`` (identity)."""
    n_cases, n_img = inputs.shape[:2]
    n_frozen = _FROZEN[p.frozen_layers]
    tr, va = _inner_split(y, p.val_fraction, rng)
    gen = torch.Generator().manual_seed(_seed(rng))
    model = copy.deepcopy(model).to(device)
    source = model.weights_source
    flat = inputs.reshape(n_cases * n_img, *inputs.shape[2:])
    img_case = np.repeat(np.arange(n_cases), n_img)
    tr_img = np.flatnonzero(np.isin(img_case, tr))
    va_img = np.flatnonzero(np.isin(img_case, va))

    for i, name in enumerate(STAGES):
        for par in model.stage(name).parameters():
            par.requires_grad_(i >= n_frozen)
    recal = p.recalibrate_bn if p.recalibrate_bn is not None else source == RANDOM_INIT
    if n_frozen and recal and cached is None:
        _recalibrate_bn(model, flat[tr_img], n_frozen, p.batch_size_eval, device)

    # frozen-trunk outputs: identity for every image, plus offline augmented copies for training
    if n_frozen:
        if cached is None:
            cached = _run(model, flat, 0, n_frozen, p.batch_size_eval, device, progress,
                          "frozen trunk")
        variants = [cached[tr_img]]
        for _ in range(p.aug_copies if p.augmentation != "none" else 0):
            aug = augment(flat[tr_img], p.augmentation, max_shift=p.max_shift, generator=gen)
            variants.append(_run(model, aug, 0, n_frozen, p.batch_size_eval, device))
        train_src = torch.stack(variants)  # (n_variants, n_train_img, ...)
        val_src = cached[va_img]
    else:
        train_src, val_src = flat[tr_img][None], flat[va_img]

    y_img = torch.as_tensor(y[img_case], dtype=torch.float32)
    y_tr, y_va = y_img[tr_img], y_img[va_img]
    n_pos = float(y_tr.sum())
    pos_weight = ((len(y_tr) - n_pos) / n_pos) if (p.balanced and n_pos > 0) else 1.0
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=p.weight_decay)

    def set_train_mode() -> None:
        model.eval()
        for s in STAGES[n_frozen:]:
            model.stage(s).train()
        model.fc.train()

    rows, best, best_loss, best_epoch, bad_epochs = [], None, np.inf, 0, 0
    epochs = _progress(range(1, p.epochs + 1), total=p.epochs, desc="fine-tuning",
                       enabled=progress)
    for epoch in epochs:
        t0 = time.perf_counter()
        set_train_mode()
        order = torch.randperm(len(tr_img), generator=gen)
        pick = torch.randint(0, train_src.shape[0], (len(tr_img),), generator=gen)
        total, count = 0.0, 0
        starts = list(range(0, len(order), p.batch_size))
        if len(starts) > 1 and len(order) - starts[-1] < 2:
            starts.pop()  # a batch of one breaks batch norm
        for b in starts:
            sel = order[b:b + p.batch_size] if b != starts[-1] else order[b:]
            xb = train_src[pick[sel], sel]
            if not n_frozen and p.augmentation != "none":
                xb = augment(xb, p.augmentation, max_shift=p.max_shift, generator=gen)
            xb, yb = xb.to(device), y_tr[sel].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model.head(xb, n_frozen)[1], yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(sel)
            count += len(sel)
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": np.nan,
               "val_auc": np.nan}
        if len(va_img):
            model.eval()
            with torch.no_grad():
                logits = torch.cat([model.head(val_src[b:b + p.batch_size_eval].to(device),
                                               n_frozen)[1].cpu()
                                    for b in range(0, len(val_src), p.batch_size_eval)])
            row["val_loss"] = float(loss_fn(logits.to(device), y_va.to(device)))
            prob = torch.sigmoid(logits).numpy().reshape(len(va), n_img).mean(1)
            row["val_auc"] = _auc(y[va], prob)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if hasattr(epochs, "set_postfix"):
            epochs.set_postfix(train_loss=f"{row['train_loss']:.3f}",
                               val_loss=f"{row['val_loss']:.3f}")
        if p.patience and len(va_img):
            if row["val_loss"] < best_loss - 1e-6:
                best_loss, best_epoch, bad_epochs = row["val_loss"], epoch, 0
                best = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= p.patience:
                    break
        else:
            best_epoch = epoch
    if best is not None:
        model.load_state_dict(best)
    for q in model.parameters():
        q.requires_grad_(True)
    model.eval()
    model.weights_source = source
    log = pd.DataFrame(rows, columns=["epoch", "train_loss", "val_loss", "val_auc", "seconds"])
    return FineTuned(model, log, best_epoch, tr, va, source), cached


def finetune(model: ResNet50, inputs: torch.Tensor, labels: Sequence[int] | np.ndarray, *,
             params: DeepParams | str | dict | None = "fast",
             rng: int | np.random.Generator | None = 0, device: str | None = None,
             progress: bool = True, **overrides: Any) -> FineTuned:
    """Fine-tune a copy of ``model`` for the binary task on training cases only.

    An inner, stratified validation split of these (training) cases (``val_fraction``) drives early
    stopping (``patience``; best-validation-loss weights restored). Every image of a case carries
    the case's label; the validation AUC is per case. Loss: binary cross-entropy (positive class
    weighted by n_neg/n_pos when ``balanced``); optimiser AdamW. Frozen stages stay in eval mode;
    their outputs are computed once (plus ``aug_copies`` augmented versions) and reused every epoch.
    Deterministic on CPU for a given ``rng`` (``torch.use_deterministic_algorithms`` inside).

    Parameters
    ----------
    model : ResNet50
        Starting model (not modified).
    inputs : Tensor
        ``(n_cases, n_images, 3, H, W)`` from :func:`build_stacks` / :func:`stack_25d`.
    labels : array-like of 0/1
        One label per case.
    params : DeepParams, preset name or dict
        ``epochs, batch_size, lr, weight_decay, frozen_layers, augmentation, aug_copies,
        max_shift, val_fraction, patience, balanced, recalibrate_bn, n_threads``;
        ``**overrides`` replace single fields (e.g. ``epochs=3``).
    rng : int, Generator or None
        Seed of the inner split, batch order, augmentation and head initialisation.
    device : str, optional
        Default: CUDA when available, else CPU.

    Returns
    -------
    FineTuned
        Model, per-epoch log, kept epoch, inner split.

    Examples
    --------
    >>> x = torch.randn(8, 1, 3, 32, 32); y = [0, 1] * 4
    >>> ft = finetune(resnet50(), x, y, params="smoke", epochs=1, progress=False)
    >>> list(ft.log.columns)[:4]
    ['epoch', 'train_loss', 'val_loss', 'val_auc']
    """
    p = preset(params, **overrides)
    x = _as_cases(inputs)
    y = np.asarray(labels).astype(int).ravel()
    if len(y) != len(x):
        raise ValueError(f"{len(x)} cases of inputs but {len(y)} labels")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got values {sorted(set(np.unique(y)))}")
    with _deterministic(p.n_threads):
        return _finetune(model, x, y, p, _rng(rng), _device(device), progress)[0]


# ---------------------------------------------------------------------------------------------
# features, scores, Grad-CAM
# ---------------------------------------------------------------------------------------------
def feature_names(n_images: int, *, style: str = "paper") -> list[str]:
    """Deep-feature column names, slice-major.

    ``style="paper"``: ``DL_0 … DL_2047`` for the first image (centre-k), ``DL_0.1 …`` for the
    centre slice, ``DL_0.2 …`` for centre+k — the names in seed 001's DLR formula (``DL_1805``,
    ``DL_537.2``), i.e. pandas' de-duplication of three blocks named ``DL_0 … DL_2047``.
    ``style="explicit"``: always ``DL_<index>.<image>`` (``DL_0.0``). With one image per case
    both styles give ``DL_<index>``.

    Examples
    --------
    >>> feature_names(3)[2048], feature_names(3, style="explicit")[0]
    ('DL_0.1', 'DL_0.0')
    """
    if style not in ("paper", "explicit"):
        raise ValueError(f"style must be 'paper' or 'explicit', got {style!r}")
    if n_images == 1:
        return [f"DL_{i}" for i in range(2048)]
    out = []
    for s in range(n_images):
        suffix = "" if (style == "paper" and s == 0) else f".{s}"
        out += [f"DL_{i}{suffix}" for i in range(2048)]
    return out


def _features_from(model: ResNet50, src: torch.Tensor, start: int, batch_size: int,
                   device: torch.device, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    feats, logits = [], []
    model = model.to(device).eval()
    batches = range(0, len(src), batch_size)
    with torch.no_grad():
        for b in _progress(batches, total=len(batches), desc="deep features", enabled=progress):
            f, lg = model.head(src[b:b + batch_size].to(device), start)
            feats.append(f.cpu())
            logits.append(lg.cpu())
    return torch.cat(feats), torch.cat(logits)


def _frame(feats: torch.Tensor, n_cases: int, n_img: int, case_ids: Sequence | None,
           style: str) -> pd.DataFrame:
    arr = feats.numpy().reshape(n_cases, n_img * 2048)
    idx = pd.Index([str(c) for c in case_ids] if case_ids is not None else range(n_cases),
                   name="patient_id")
    if len(idx) != n_cases:
        raise ValueError(f"{n_cases} cases of inputs but {len(idx)} case ids")
    return pd.DataFrame(arr.astype(np.float64), index=idx, columns=feature_names(n_img, style=style))


def extract_features(model: ResNet50, inputs: torch.Tensor, case_ids: Sequence | None = None, *,
                     batch_size: int = 64, device: str | None = None, style: str = "paper",
                     progress: bool = True) -> pd.DataFrame:
    """2048-d global-average-pool features per image → one row per case.

    Parameters
    ----------
    model : ResNet50
        Evaluated in eval mode under ``torch.no_grad``.
    inputs : Tensor
        ``(n_cases, n_images, 3, H, W)``.
    case_ids : sequence, optional
        Row index (``patient_id``, as strings); default 0..n-1.
    style : {"paper", "explicit"}
        Column naming, see :func:`feature_names`.

    Returns
    -------
    DataFrame
        ``n_cases × (2048 · n_images)`` float64, columns slice-major: image 0 = centre-k,
        1 = centre (largest ROI area), 2 = centre+k.

    Examples
    --------
    >>> f = extract_features(resnet50(), torch.zeros(2, 3, 3, 32, 32), ["a", "b"], progress=False)
    >>> f.shape, f.columns[-1]
    ((2, 6144), 'DL_2047.2')
    """
    x = _as_cases(inputs)
    n, m = x.shape[:2]
    with _deterministic(None):
        feats, _ = _features_from(model, x.reshape(n * m, *x.shape[2:]), 0, batch_size,
                                  _device(device), progress)
    return _frame(feats, n, m, case_ids, style)


def predict_proba(model: ResNet50, inputs: torch.Tensor, case_ids: Sequence | None = None, *,
                  batch_size: int = 64, device: str | None = None) -> pd.Series:
    """The network's own probability of the positive class per case (mean over its images)."""
    x = _as_cases(inputs)
    n, m = x.shape[:2]
    with _deterministic(None):
        _, logits = _features_from(model, x.reshape(n * m, *x.shape[2:]), 0, batch_size,
                                   _device(device), False)
    prob = torch.sigmoid(logits).numpy().reshape(n, m).mean(1)
    idx = pd.Index([str(c) for c in case_ids] if case_ids is not None else range(n),
                   name="patient_id")
    return pd.Series(prob, index=idx, name="dl_probability")


def dl_model_scores(model: ResNet50, inputs: torch.Tensor, case_ids: Sequence | None = None,
                    **kw: Any) -> pd.Series:
    """Seed 001's "DL model" score: the fine-tuned ResNet50's own probability per case.

    The paper compares "ResNet50 alone" (test AUC 0.805) with the DLR model and calls it
    "end-to-end DL", so the DL model is the network's output, not a classifier on DL features.
    Alias of :func:`predict_proba`.
    """
    return predict_proba(model, inputs, case_ids, **kw)


def gradcam(model: ResNet50, inputs: torch.Tensor, target: int = 1, *,
            device: str | None = None) -> np.ndarray:
    """Grad-CAM heat maps of the last residual block (``layer4``) for one case.

    For each image, the ``layer4`` activation maps are weighted by the spatial mean of the
    gradient of the score (logit for ``target=1``, minus the logit for ``target=0``), summed,
    passed through ReLU, upsampled bilinearly to the input size and divided by their maximum.

    Parameters
    ----------
    model : ResNet50
    inputs : Tensor
        One case, ``(n_images, 3, H, W)`` (or ``(3, H, W)``).
    target : {1, 0}
        Class whose evidence is shown.

    Returns
    -------
    ndarray
        ``(n_images, H, W)`` float in [0, 1] (all zeros where no evidence for the class).

    References
    ----------
    Selvaraju RR et al. Grad-CAM: visual explanations from deep networks via gradient-based
    localization. ICCV 2017.

    Examples
    --------
    >>> gradcam(resnet50(), torch.zeros(3, 3, 64, 64)).shape
    (3, 64, 64)
    """
    x = torch.as_tensor(inputs).float()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"gradcam needs one case (n_images, 3, H, W), got {tuple(x.shape)}")
    dev = _device(device)
    model = model.to(dev).eval()
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = model.layer4.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            xx = x.to(dev).requires_grad_(True)
            logit = model(xx)
            score = logit if target == 1 else -logit
            model.zero_grad(set_to_none=True)
            score.sum().backward()
            a, g = store["a"].detach(), store["a"].grad.detach()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((w * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    mx = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    cam = torch.where(cam.flatten(1).max(1).values[:, None, None] > 0, cam / mx,
                      torch.zeros_like(cam))
    return cam.cpu().numpy().clip(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# one call for a cohort
# ---------------------------------------------------------------------------------------------
@dataclass
class DeepResult:
    """Everything the DL arm of a study produces.

    Attributes
    ----------
    features : DataFrame
        Deep features of every case (index ``patient_id``), see :func:`extract_features`.
    scores : Series
        DL-model probability per case (:func:`dl_model_scores`), index ``patient_id``.
    log : DataFrame
        Per-epoch fine-tuning log (:class:`FineTuned`).
    stacks : Tensor
        The 2.5D inputs ``(n_cases, n_images, 3, size, size)`` in the order of ``slices``.
    slices : DataFrame
        Slice indices per case (:func:`build_stacks`).
    model : ResNet50
        The fine-tuned network.
    weights_source : str
        Plain-words origin of the starting weights (print it in the report).
    params : DeepParams
        Parameters used.
    timings : dict
        Wall-clock seconds for ``stacks``, ``finetune``, ``features`` and ``total``, and the
        process CPU seconds ``cpu_total`` (all threads; less sensitive to other load).
    train_ids : list of str
        Training patient ids the network was fine-tuned on.
    best_epoch : int
        Fine-tuning epoch whose weights were kept.
    """

    features: pd.DataFrame
    scores: pd.Series
    log: pd.DataFrame
    stacks: torch.Tensor
    slices: pd.DataFrame
    model: ResNet50
    weights_source: str
    params: DeepParams
    timings: dict = field(default_factory=dict)
    train_ids: list = field(default_factory=list)
    best_epoch: int = 0

    def summary(self) -> pd.DataFrame:
        """One-row description for the report (weights, input size, epochs run, time)."""
        p = self.params
        return pd.DataFrame([{
            "weights": self.weights_source,
            "input": f"{p.mode}, {p.size}×{p.size}, "
                     + (f"neighbours ±{p.k_mm:g} mm" if p.k_mm is not None else f"k={p.k}"),
            "frozen": p.frozen_layers, "epochs_run": len(self.log),
            "best_epoch": self.best_epoch,
            "n_train_cases": len(self.train_ids), "n_cases": len(self.features),
            "seconds": round(self.timings.get("total", float("nan")), 1)}])

    def gradcam(self, patient_id: str, target: int = 1) -> np.ndarray:
        """Grad-CAM maps of one case (see :func:`gradcam`)."""
        pos = self.slices.index.get_loc(str(patient_id))
        return gradcam(self.model, self.stacks[pos], target)


def deep_features_for_cohort(rois: pd.DataFrame, labels: pd.Series | dict,
                             train_ids: Sequence, *,
                             params: DeepParams | str | dict | None = "fast",
                             weights: str | os.PathLike | None = None,
                             root: str | os.PathLike | None = None,
                             reader: str | int | None = None, sequence: str | None = None,
                             rng: int | np.random.Generator | None = 0,
                             device: str | None = None, style: str = "paper",
                             progress: bool = True) -> DeepResult:
    """Seed 001's DL arm in one call: 2.5D stacks → fine-tune on training ids → features for all.

    Parameters
    ----------
    rois : DataFrame
        Cohort ROI table (``Cohort.rois``); one row per patient is used (``reader``/``sequence``
        filters; default: first row of each patient).
    labels : Series or dict
        Outcome (0/1) by ``patient_id``; only the training ids' labels are used.
    train_ids : sequence
        Patient ids of the training set: fine-tuning (including its inner validation split for
        early stopping) sees only these cases.
    params : DeepParams, preset name (``"fast"``, ``"paper"``, ``"smoke"``) or dict
        See :class:`DeepParams`; a dict may hold ``preset`` plus overrides.
    weights : path, optional
        Local torchvision ``resnet50`` ImageNet state dict; empty → random initialisation (said
        in ``weights_source``).
    root : path, optional
        Folder for relative image paths.
    rng : int, Generator or None
        Seed of the initialisation and fine-tuning.
    style : {"paper", "explicit"}
        Feature column naming (:func:`feature_names`).

    Returns
    -------
    DeepResult

    Examples
    --------
    >>> # res = deep_features_for_cohort(cohort.rois, cases.set_index("patient_id")["outcome"],
    >>> #                                train_ids, params="fast")
    >>> # res.features.filter(like="DL_").shape   # (n_cases, 6144)
    """
    t_start, c_start = time.perf_counter(), time.process_time()
    p = preset(params)
    g = _rng(rng)
    with _deterministic(p.n_threads):
        prep = _prepare(rois, labels, train_ids, p, weights=weights, root=root, reader=reader,
                        sequence=sequence, rng=g, device=device, progress=progress)
        ft, features, scores = _fit_extract(prep, prep.train_ids, g, style, progress)
    t_end = time.perf_counter()
    timings = {"stacks": prep.seconds,
               "finetune": t_end - t_start - prep.seconds - ft.seconds_features,
               "features": ft.seconds_features, "total": t_end - t_start,
               "cpu_total": time.process_time() - c_start}
    return DeepResult(features, scores, ft.log, prep.stacks, prep.slices, ft.model,
                      ft.weights_source, p, timings, prep.train_ids, ft.best_epoch)


@dataclass
class _Prepared:
    """The label-independent part of a cohort's DL arm, paid once and shared by every
    fine-tuning of :func:`deep_oof`: the 2.5D stacks, the starting network (batch-norm statistics
    of its frozen stages re-estimated on the training images when required; no label involved)
    and the frozen trunk's outputs of every image."""

    p: DeepParams
    stacks: torch.Tensor
    slices: pd.DataFrame
    labels: pd.Series
    train_ids: list
    model: ResNet50
    cached: torch.Tensor | None
    device: torch.device
    seconds: float

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.slices.index.get_loc(i) for i in ids], dtype=int)


def _prepare(rois, labels, train_ids, p: DeepParams, *, weights, root, reader, sequence, rng,
             device, progress) -> _Prepared:
    t0 = time.perf_counter()
    lab = pd.Series(labels)
    lab.index = lab.index.astype(str)
    train_ids = [str(i) for i in train_ids]
    stacks, slices = build_stacks(rois, params=p, root=root, reader=reader, sequence=sequence,
                                  progress=progress)
    missing = [i for i in train_ids if i not in slices.index]
    if missing:
        raise ValueError(f"training ids without an ROI row: {missing[:10]}")
    if any(i not in lab.index for i in train_ids):
        raise ValueError("labels are missing for training ids: "
                         f"{[i for i in train_ids if i not in lab.index][:10]}")
    seconds = time.perf_counter() - t0
    dev = _device(device)
    model = resnet50(weights, rng=rng)
    n_frozen = _FROZEN[p.frozen_layers]
    n, m = stacks.shape[:2]
    flat = stacks.reshape(n * m, *stacks.shape[2:])
    cached = None
    if n_frozen:
        recal = p.recalibrate_bn if p.recalibrate_bn is not None else \
            model.weights_source == RANDOM_INIT
        pos = np.array([slices.index.get_loc(i) for i in train_ids], dtype=int)
        if recal:  # image statistics of the training patients, no label
            model = copy.deepcopy(model).to(dev)
            _recalibrate_bn(model, flat[(pos[:, None] * m + np.arange(m)).ravel()], n_frozen,
                            p.batch_size_eval, dev)
        model = model.to(dev)
        cached = _run(model, flat, 0, n_frozen, p.batch_size_eval, dev, progress, "frozen trunk")
    return _Prepared(p, stacks, slices, lab, train_ids, model, cached, dev, seconds)


def _fit_extract(prep: _Prepared, fit_ids: Sequence[str], rng: np.random.Generator, style: str,
                 progress: bool) -> tuple[FineTuned, pd.DataFrame, pd.Series]:
    """Fine-tune ``prep.model`` on ``fit_ids`` (their labels only); features and network
    probability of every case."""
    p, stacks = prep.p, prep.stacks
    n, m = stacks.shape[:2]
    n_frozen = _FROZEN[p.frozen_layers]
    pos = prep.positions(fit_ids)
    y = prep.labels.loc[list(fit_ids)].astype(int).to_numpy()
    cached_fit = None
    if prep.cached is not None:
        rest = prep.cached.shape[1:]
        cached_fit = prep.cached.reshape(n, m, *rest)[pos].reshape(len(pos) * m, *rest)
    ft, _ = _finetune(prep.model, stacks[pos], y, p, rng, prep.device, progress, cached=cached_fit)
    t0 = time.perf_counter()
    src = prep.cached if prep.cached is not None else stacks.reshape(n * m, *stacks.shape[2:])
    feats, logits = _features_from(ft.model, src, n_frozen, p.batch_size_eval, prep.device,
                                   progress)
    features = _frame(feats, n, m, list(prep.slices.index), style)
    scores = pd.Series(torch.sigmoid(logits).numpy().reshape(n, m).mean(1),
                       index=features.index, name="dl_probability")
    ft.seconds_features = time.perf_counter() - t0
    return ft, features, scores


# ---------------------------------------------------------------------------------------------
# out-of-fold DL chain (stacking without label leakage)
# ---------------------------------------------------------------------------------------------
def _stack_frame(fold: pd.Series, full: pd.Series, per_fold: Sequence[pd.Series]) -> pd.DataFrame:
    """Scores of one chain: ``oof`` (training rows: the fold chain that did not see them; NaN
    elsewhere), ``full`` (chain fitted on every training row), ``fold_mean`` (mean of the fold
    chains), ``fold`` (fold of a training row, -1 elsewhere) and ``fold_0 …``."""
    idx = full.index
    cols = {f"fold_{k}": s.reindex(idx).astype(float) for k, s in enumerate(per_fold)}
    f = fold.reindex(idx).fillna(-1).astype(int)
    oof = pd.Series(np.nan, index=idx)
    for k, s in enumerate(per_fold):
        oof[f == k] = s.reindex(idx)[f == k]
    folds = pd.DataFrame(cols, index=idx)
    return pd.DataFrame({"oof": oof, "full": full.astype(float), "fold_mean": folds.mean(axis=1),
                         "fold": f}, index=idx).join(folds)


@dataclass
class DeepOOF:
    """Result of :func:`deep_oof`: one network fine-tuned on all training patients and one per
    training fold, fine-tuned without that fold.

    Attributes
    ----------
    full : DeepResult or None
        The network fine-tuned on every training patient (test patients' features and scores,
        Grad-CAM); None in the copy of :meth:`without_networks`.
    features, scores : DataFrame, Series
        That network's features and probability of every case.
    fold : Series
        Fold (0 … K-1) of every training patient (index ``patient_id``).
    fold_features, fold_scores : list
        Features and probability of **every** case from fold network ``k``.
    fold_train_ids : list of list of str
        Patients fold network ``k`` was fine-tuned on (all training patients outside fold ``k``).
    fold_logs, fold_best_epochs : list
        Per-epoch log and kept epoch of each fold network.
    timings : dict
        Wall seconds: ``stacks`` (paid once), ``finetune_full``, ``finetune_folds``, ``total``;
        ``cpu_total`` process CPU seconds.
    """

    full: DeepResult | None
    features: pd.DataFrame
    scores: pd.Series
    fold: pd.Series
    fold_features: list
    fold_scores: list
    fold_train_ids: list
    fold_logs: list = field(default_factory=list)
    fold_best_epochs: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def n_folds(self) -> int:
        return len(self.fold_features)

    def without_networks(self) -> DeepOOF:
        """A copy without the networks and stacks (what a permutation worker needs)."""
        return dataclasses.replace(self, full=None)

    def dl_scores(self) -> pd.DataFrame:
        """The networks' own probability as a :meth:`chain` frame (``oof``: each training
        patient scored by the fold network that never saw it; ``full``: the network fine-tuned
        on every training patient)."""
        return _stack_frame(self.fold, self.scores, self.fold_scores)

    def chain(self, fit) -> dict[str, pd.DataFrame]:
        """Run a label-dependent chain on the deep features, out of fold.

        ``fit(features, fit_ids)`` fits the chain on the rows ``fit_ids`` of ``features`` (one
        network's features of every case) and returns a Series of scores of every row, or a dict
        name → Series. It is called once per fold with fold network ``k``'s features and the
        training patients outside fold ``k`` (the rows that network was fine-tuned on), and once
        with the full network's features and every training patient. Returns name →
        :func:`_stack_frame` (``oof, full, fold_mean, fold, fold_0 …``): the ``oof`` score of a
        training patient comes from a network *and* a chain that never saw its label.
        """
        def as_dict(out):
            return dict(out) if isinstance(out, dict) else {"score": out}

        per_fold = [as_dict(fit(f, pd.Index(ids)))
                    for f, ids in zip(self.fold_features, self.fold_train_ids)]
        whole = as_dict(fit(self.features, pd.Index(self.fold.index)))
        return {name: _stack_frame(self.fold, s, [d[name] for d in per_fold])
                for name, s in whole.items()}

    def summary(self) -> pd.DataFrame:
        """One row per network (all training patients, then each fold)."""
        first = self.full.summary() if self.full is not None else pd.DataFrame([{}])
        rows = [first.assign(network="all training patients")]
        for k, (ids, log) in enumerate(zip(self.fold_train_ids, self.fold_logs)):
            rows.append(first.assign(network=f"fold {k + 1} of {self.n_folds} held out",
                                     epochs_run=len(log), best_epoch=self.fold_best_epochs[k],
                                     n_train_cases=len(ids),
                                     seconds=round(self.timings.get(f"fold_{k}", np.nan), 1)))
        out = pd.concat(rows, ignore_index=True)
        return out[["network", *[c for c in out.columns if c != "network"]]]

    def logs(self) -> pd.DataFrame:
        """Fine-tuning logs of every network (column ``network``)."""
        logs = [(self.full.log if self.full is not None else pd.DataFrame()).assign(
            network="all training patients")]
        logs += [log.assign(network=f"fold {k + 1}") for k, log in enumerate(self.fold_logs)]
        out = pd.concat(logs, ignore_index=True)
        return out[["network", *[c for c in out.columns if c != "network"]]]


def deep_oof(rois: pd.DataFrame, labels: pd.Series | dict, train_ids: Sequence, *,
             folds: int = 3, params: DeepParams | str | dict | None = "fast",
             weights: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
             reader: str | int | None = None, sequence: str | None = None,
             rng: int | np.random.Generator | None = 0, device: str | None = None,
             style: str = "paper", progress: bool = True) -> DeepOOF:
    """The DL arm for stacking: a network per training fold, so no training patient's deep
    features or scores come from a network that saw its label.

    :func:`deep_features_for_cohort` fine-tunes one network on the training patients and
    extracts features for everybody: fine for test patients, but the training patients' features
    and scores are then in-sample, and a selection chain or nomogram fitted on them over-trusts
    them. Here the training patients are split into ``folds`` stratified folds (seeded by
    ``rng``); for each fold ``k`` a network is fine-tuned on the other folds only and gives the
    features and probability of every case. :meth:`DeepOOF.chain` then fits a downstream chain
    on fold ``k``'s network and the other folds, and scores fold ``k``: the whole DL chain is out
    of fold. The network fine-tuned on all training patients (identical to
    :func:`deep_features_for_cohort` with the same arguments) scores the test patients.

    Label-independent work is paid once: the 2.5D stacks, the starting network (its frozen
    stages' batch-norm statistics re-estimated on the training images when required, no label
    involved) and the frozen trunk's outputs of every image are shared by the ``folds + 1``
    fine-tunings.

    Parameters
    ----------
    folds : int
        Number of training folds (at least 2; the notebooks use 3 or more).
    rois, labels, train_ids, params, weights, root, reader, sequence, rng, device, style,
    progress
        As :func:`deep_features_for_cohort`.

    Returns
    -------
    DeepOOF
    """
    from sklearn.model_selection import StratifiedKFold

    if int(folds) < 2:
        raise ValueError(f"deep_oof needs at least 2 folds, got {folds}")
    lab = pd.Series(labels)
    lab.index = lab.index.astype(str)
    counts = np.bincount(lab.reindex([str(i) for i in train_ids]).dropna().astype(int),
                         minlength=2)
    if counts.min() < int(folds):
        raise ValueError(f"deep_oof: {int(folds)} folds need at least {int(folds)} training "
                         f"patients per class, found {counts.tolist()} (benign, malignant)")
    t_start, c_start = time.perf_counter(), time.process_time()
    p = preset(params)
    g = _rng(rng)
    timings: dict = {}
    with _deterministic(p.n_threads):
        prep = _prepare(rois, labels, train_ids, p, weights=weights, root=root, reader=reader,
                        sequence=sequence, rng=g, device=device, progress=progress)
        t0 = time.perf_counter()
        ft, features, scores = _fit_extract(prep, prep.train_ids, g, style, progress)
        timings["finetune_full"] = time.perf_counter() - t0
        ids = np.array(prep.train_ids)
        y = prep.labels.loc[ids].astype(int).to_numpy()
        skf = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=_seed(g))
        fold = pd.Series(-1, index=pd.Index(ids, name="patient_id"), name="fold")
        fold_ids, fold_feats, fold_scores, fold_logs, fold_best = [], [], [], [], []
        for k, (fit_pos, held_pos) in enumerate(skf.split(np.zeros(len(y)), y)):
            t0 = time.perf_counter()
            fold.iloc[held_pos] = k
            fit_ids = [str(i) for i in ids[np.sort(fit_pos)]]
            ft_k, feats_k, scores_k = _fit_extract(prep, fit_ids, g, style, progress)
            fold_ids.append(fit_ids)
            fold_feats.append(feats_k)
            fold_scores.append(scores_k)
            fold_logs.append(ft_k.log)
            fold_best.append(ft_k.best_epoch)
            timings[f"fold_{k}"] = time.perf_counter() - t0
    timings.update(stacks=prep.seconds,
                   finetune_folds=sum(timings[f"fold_{k}"] for k in range(int(folds))),
                   total=time.perf_counter() - t_start, cpu_total=time.process_time() - c_start)
    full = DeepResult(features, scores, ft.log, prep.stacks, prep.slices, ft.model,
                      ft.weights_source, p, {"stacks": prep.seconds,
                                             "finetune": timings["finetune_full"],
                                             "total": prep.seconds + timings["finetune_full"]},
                      prep.train_ids, ft.best_epoch)
    return DeepOOF(full, features, scores, fold, fold_feats, fold_scores, fold_ids, fold_logs,
                   fold_best, timings)
