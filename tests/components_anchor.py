"""Component equivalence with nnU-Net v2's own code: loss, patch sampling, initialisation.

Each comparison returns :class:`Row` s (component, metric, ours, nnU-Net, verdict). ``tests/test_components_vs_
nnunet.py`` asserts every verdict and ``benchmarks/components_vs_nnunet.py`` prints them as one table, so the
test and the benchmark run the same comparisons. ``load(name)`` imports one of nnU-Net's modules
(``tests/nnunet_anchor.nnunet_module``).

Thresholds are chosen to fail for a real difference: the loss and its gradients to float32 rounding, sampling
distributions by chi-square tests at p >= 1e-3 (fixed seeds, so the outcome is reproducible; the test file also
shows a real difference is rejected), initialisation statistics within 6 standard errors per layer.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

Loader = Callable[[str], ModuleType]
P_MIN = 1e-3


@dataclass(frozen=True)
class Row:
    component: str
    metric: str
    ours: str
    nnunet: str
    ok: bool


# ----------------------------------------------------------------------------------------------------- loss
LOSS_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
LOSS_PATCH = [8, 32, 32]


def nnunet_ds_loss(load: Loader, batch_dice: bool, n_outputs: int) -> torch.nn.Module:
    """nnU-Net's loss exactly as ``nnUNetTrainer._build_loss`` builds it for one process (labels, no ignore)."""
    compound = load("nnunetv2.training.loss.compound_losses")
    dice = load("nnunetv2.training.loss.dice")
    wrapper = load("nnunetv2.training.loss.deep_supervision")
    loss = compound.DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                                   weight_ce=1, weight_dice=1, ignore_label=None,
                                   dice_class=dice.MemoryEfficientSoftDiceLoss)
    weights = np.array([1 / (2 ** i) for i in range(n_outputs)])
    weights[-1] = 0
    return wrapper.DeepSupervisionWrapper(loss, weights / weights.sum())


def _ds_scales() -> list[list[float]]:
    return [list(s) for s in 1 / np.cumprod(np.vstack(LOSS_STRIDES), axis=0)]


def nnunet_targets(load: Loader, target: torch.Tensor) -> list[torch.Tensor]:
    """Per-output targets as nnU-Net's ``DownsampleSegForDSTransform`` makes them, sample by sample."""
    down = load("batchgeneratorsv2.transforms.utils.deep_supervision_downsampling")
    transform = down.DownsampleSegForDSTransform(_ds_scales())
    per_sample = [transform(segmentation=t)["segmentation"] for t in target]
    return [torch.stack([s[i] for s in per_sample]) for i in range(len(per_sample[0]))]


def loss_case(load: Loader, batch_dice: bool, background_only: bool, seed: int = 0) -> dict[str, float]:
    """Loss and gradient differences between ours and nnU-Net's on the same logits and targets."""
    from amos_autoseg.training.loss import build_loss

    g = torch.Generator().manual_seed(seed)
    k, b = 4, 2
    target = torch.randint(0, k, (b, 1, *LOSS_PATCH), generator=g, dtype=torch.int16)
    if background_only:
        target.zero_()
    target[1, :, :, :16][target[1, :, :, :16] == 2] = 1  # a class missing from part of one sample
    shapes = [[int(round(p * s)) for p, s in zip(LOSS_PATCH, scale)] for scale in _ds_scales()]
    logits = [torch.randn(b, k, *s, generator=g) * 3 for s in shapes]
    ours_in = [x.clone().requires_grad_() for x in logits]
    theirs_in = [x.clone().requires_grad_() for x in logits]
    ours = build_loss(batch_dice, 1.0, 1.0)(ours_in, target)
    theirs = nnunet_ds_loss(load, batch_dice, len(logits))(theirs_in, nnunet_targets(load, target))
    ours.backward()
    theirs.backward()
    theirs_grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in theirs_in]  # weight-0 head skipped
    grad_diff = max(float((a.grad - g).abs().max()) for a, g in zip(ours_in, theirs_grads))
    grad_scale = max(float(g.abs().max()) for g in theirs_grads)
    ours, theirs = ours.detach(), theirs.detach()
    return {"ours": float(ours), "nnunet": float(theirs), "loss_diff": abs(float(ours) - float(theirs)),
            "grad_diff": grad_diff, "grad_rel": grad_diff / grad_scale}


def loss_rows(load: Loader) -> list[Row]:
    rows = []
    for batch_dice in (True, False):
        for background_only in (False, True):
            r = loss_case(load, batch_dice, background_only)
            what = f"batch_dice={batch_dice}, {'all-background' if background_only else 'mixed'} targets"
            rows.append(Row("DS Dice+CE loss", f"loss, {what}", f"{r['ours']:.7f}", f"{r['nnunet']:.7f}",
                            r["loss_diff"] <= 1e-6 * max(1.0, abs(r["nnunet"]))))
            rows.append(Row("DS Dice+CE loss", f"max |grad diff| / max |grad|, {what}", f"{r['grad_rel']:.1e}",
                            "0 (reference)", r["grad_rel"] <= 1e-5))
    return rows


# ------------------------------------------------------------------------------------------------- sampling
SAMPLE_PATCH = (16, 16, 16)
SAMPLE_BATCH = 3
OVERSAMPLE = 0.33


class FakeCase:
    """A preprocessed case whose channels give away where a crop came from: z+1, y+1, x+1 and case index+1."""

    def __init__(self, index: int, shape: tuple[int, int, int], classes: dict[int, list[tuple[int, int, int]]]):
        grids = np.meshgrid(*[np.arange(s, dtype=np.float32) + 1 for s in shape], indexing="ij")
        self.data = np.stack([*grids, np.full(shape, index + 1, np.float32)])
        self.seg = np.zeros((1, *shape), np.int16)
        self.class_locations: dict[int, np.ndarray] = {}
        for label, voxels in classes.items():
            for v in voxels:
                self.seg[(0, *v)] = label
            self.class_locations[label] = np.array([(0, *v) for v in voxels], dtype=np.int64).reshape(-1, 4)


def sampling_cases() -> list[FakeCase]:
    """A case with three classes of 2, 5 and 12 voxels (all far from the lower borders, so a forced crop is
    centred exactly on its voxel), one without foreground, one thinner than the patch."""
    rng = np.random.default_rng(7)

    def voxels(n: int, low: int, shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        picks: set[tuple[int, int, int]] = set()
        while len(picks) < n:
            picks.add(tuple(int(rng.integers(low, s - 1)) for s in shape))  # type: ignore[arg-type]
        return sorted(picks)

    a = (40, 48, 48)
    taken = voxels(19, 8, a)
    return [FakeCase(0, a, {1: taken[:2], 2: taken[2:7], 3: taken[7:]}),
            FakeCase(1, (36, 40, 44), {1: [], 2: []}),
            FakeCase(2, (10, 48, 48), {1: [(5, 20, 30), (6, 30, 10)]})]


class _NnunetDataset:
    def __init__(self, cases: list[FakeCase]) -> None:
        self.cases = cases
        self.identifiers = [f"case_{i}" for i in range(len(cases))]

    def load_case(self, identifier: str) -> tuple[Any, Any, None, dict[str, Any]]:
        case = self.cases[int(identifier.split("_")[1])]
        return case.data, case.seg, None, {"class_locations": case.class_locations}


def _decode(data: np.ndarray, seg: np.ndarray) -> dict[str, Any]:
    """Case index, crop start and centre label of one cropped sample (C, z, y, x)."""
    start = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        profile = data[axis].max(axis=other)
        first = int(np.flatnonzero(profile)[0])
        start.append(int(profile[first]) - 1 - first)
    centre = tuple(p // 2 for p in SAMPLE_PATCH)
    return {"case": int(data[3].max()) - 1, "start": tuple(start), "centre_label": int(seg[(0, *centre)])}


def draw_ours(cases: list[FakeCase], n_batches: int, seed: int = 1) -> list[list[dict[str, Any]]]:
    from amos_autoseg.data.batches import BatchSource

    source = BatchSource(lambda cid: cases[int(cid.split("_")[1])], [f"case_{i}" for i in range(len(cases))],
                         list(SAMPLE_PATCH), SAMPLE_BATCH, OVERSAMPLE, seed, None)
    out = []
    for step in range(n_batches):
        b = source.make_batch(step)
        out.append([_decode(d, s) for d, s in zip(b["data"], b["target"])])
    return out


def nnunet_loader(load: Loader, cases: list[FakeCase]) -> Any:
    loader_mod = load("nnunetv2.training.dataloading.data_loader")
    labels = load("nnunetv2.utilities.label_handling.label_handling")
    manager = labels.LabelManager({"background": 0, "a": 1, "b": 2, "c": 3}, regions_class_order=None)
    return loader_mod.nnUNetDataLoader(_NnunetDataset(cases), SAMPLE_BATCH, SAMPLE_PATCH, SAMPLE_PATCH, manager,
                                       oversample_foreground_percent=OVERSAMPLE)


def draw_nnunet(load: Loader, cases: list[FakeCase], n_batches: int, seed: int = 1) -> list[list[dict[str, Any]]]:
    loader = nnunet_loader(load, cases)
    np.random.seed(seed)
    out = []
    for _ in range(n_batches):
        b = loader.generate_train_batch()
        out.append([_decode(d.numpy(), s.numpy()) for d, s in zip(b["data"], b["target"])])
    return out


def chi2_p(a: Counter, b: Counter) -> float:
    """p-value of a chi-square test that two samples of categories come from one distribution."""
    from scipy.stats import chi2_contingency

    keys = sorted(set(a) | set(b))
    if len(keys) < 2:
        return 1.0
    return float(chi2_contingency(np.array([[a[k] for k in keys], [b[k] for k in keys]])).pvalue)


def _forced_positions(load: Loader, cases: list[FakeCase]) -> tuple[int, int]:
    """(equal, compared) of our forced-foreground rule against nnU-Net's over batch sizes and fractions."""
    from amos_autoseg.data.sampling import forced_foreground

    loader = nnunet_loader(load, cases)
    equal = total = 0
    for batch in range(1, 13):
        for fraction in (0.0, 0.2, 0.33, 0.5, 0.66, 1.0):
            loader.batch_size, loader.oversample_foreground_percent = batch, fraction
            theirs = [loader._oversample_last_XX_percent(j) for j in range(batch)]
            equal += theirs == forced_foreground(batch, fraction)
            total += 1
    return equal, total


def sampling_stats(draws: list[list[dict[str, Any]]], cases: list[FakeCase]) -> dict[str, Any]:
    """Counters of what the draws picked: case, forced class, voxel in class 3, crop starts, centre hits."""
    forced_from = round(SAMPLE_BATCH * (1 - OVERSAMPLE))
    voxels3 = [tuple(int(c) for c in v[1:]) for v in cases[0].class_locations[3]]
    s: dict[str, Any] = {"case": Counter(), "class": Counter(), "voxel3": Counter(), "centred": [0, 0],
                         **{f"start{a}": Counter() for a in range(3)}, "thin_z": Counter()}
    for batch in draws:
        for j, d in enumerate(batch):
            s["case"][d["case"]] += 1
            centre = tuple(st + p // 2 for st, p in zip(d["start"], SAMPLE_PATCH))
            if j >= forced_from and d["case"] == 0:
                s["class"][d["centre_label"]] += 1
                s["centred"][0] += d["centre_label"] > 0
                s["centred"][1] += 1
                if centre in voxels3:
                    s["voxel3"][voxels3.index(centre)] += 1
            elif j < forced_from and d["case"] == 0:
                for a in range(3):
                    s[f"start{a}"][d["start"][a]] += 1
            elif j < forced_from and d["case"] == 2:
                s["thin_z"][d["start"][0]] += 1
    return s


def sampling_rows(load: Loader, n_batches: int = 1500) -> list[Row]:
    cases = sampling_cases()
    equal, total = _forced_positions(load, cases)
    ours, theirs = sampling_stats(draw_ours(cases, n_batches), cases), \
        sampling_stats(draw_nnunet(load, cases, n_batches), cases)
    rows = [Row("sampling", "forced-foreground positions (batch 1-12 x 6 fractions)", f"{equal}/{total} equal",
                "reference", equal == total)]
    for key, metric in (("case", "case drawn"), ("class", "class of a forced crop"),
                        ("voxel3", "voxel of class 3 a forced crop is centred on"),
                        ("start0", "random crop start z"), ("start1", "random crop start y"),
                        ("start2", "random crop start x"),
                        ("thin_z", "random crop start z of a case thinner than the patch (padded both sides)")):
        p = chi2_p(ours[key], theirs[key])
        rows.append(Row("sampling", f"{metric} (chi-square p)", _counts(ours[key]), _counts(theirs[key]),
                        p >= P_MIN and set(ours[key]) == set(theirs[key])))
        rows[-1] = Row(rows[-1].component, rows[-1].metric.replace("p)", f"p = {p:.2g})"), rows[-1].ours,
                       rows[-1].nnunet, rows[-1].ok)
    hit_o, hit_t = ours["centred"][0] / ours["centred"][1], theirs["centred"][0] / theirs["centred"][1]
    rows.append(Row("sampling", "forced crops centred on a voxel of the class", f"{hit_o:.3f}", f"{hit_t:.3f}",
                    hit_o == hit_t == 1.0))
    return rows


def _counts(c: Counter) -> str:
    keys = sorted(c)
    if len(keys) > 6:
        return f"{len(keys)} values in [{keys[0]}, {keys[-1]}], n={sum(c.values())}"
    return " ".join(f"{k}:{c[k]}" for k in keys)


# ------------------------------------------------------------------------------------------- initialisation
INIT_PLANS = {
    "PlainConvUNet": ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[1, 3, 3]] + [[3, 3, 3]] * 4,
                      [32, 64, 128, 256, 320], [2] * 5, [2] * 4),
    "ResidualEncoderUNet": ([[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 4, [32, 64, 128, 256],
                            [1, 3, 4, 6], [1] * 3),
}


def init_networks(load: Loader, arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Ours from a plan and dynamic_network_architectures' same network with nnU-Net's initialisation."""
    from amos_autoseg.network import build_network
    from amos_autoseg.planning.plans import NetworkPlan

    unet = load("dynamic_network_architectures.architectures.unet")
    strides, kernels, features, blocks, decoder = INIT_PLANS[arch]
    ours = build_network(NetworkPlan(arch, strides, kernels, features, blocks, decoder), 1, 16)
    kwargs = dict(input_channels=1, n_stages=len(strides), features_per_stage=features, conv_op=torch.nn.Conv3d,
                  kernel_sizes=kernels, strides=strides, num_classes=16, n_conv_per_stage_decoder=decoder,
                  conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    if arch == "PlainConvUNet":
        ref = unet.PlainConvUNet(n_conv_per_stage=blocks, **kwargs)
    else:
        ref = unet.ResidualEncoderUNet(n_blocks_per_stage=blocks, **kwargs)
    ref.apply(ref.initialize)  # what nnunetv2.utilities.get_network_from_plans does
    return ours, ref


def init_stats(ours: torch.nn.Module, ref: torch.nn.Module) -> dict[str, Any]:
    """Per-parameter comparison: z-scores of the std and mean differences of weights, exact equality of the
    rest (biases, norm affine parameters)."""
    worst_std = worst_mean = 0.0
    ratios, exact_equal, exact_total, n_weights = [], 0, 0, 0
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        a, b = a.detach().double().flatten(), b.detach().double().flatten()
        if a.numel() != b.numel():
            raise AssertionError(f"{name}: {a.numel()} vs {b.numel()} values")
        if a.ndim and name.endswith("weight") and b.std() > 0 and a.numel() > 1 and not _is_norm(ours, name):
            n, sigma = a.numel(), float(b.std())
            worst_std = max(worst_std, abs(float(a.std()) - sigma) / (sigma / n ** 0.5))
            worst_mean = max(worst_mean, abs(float(a.mean() - b.mean())) / (sigma * (2 / n) ** 0.5))
            ratios.append(float(a.std()) / sigma)
            n_weights += 1
        else:
            exact_total += 1
            exact_equal += bool(torch.equal(a, b))
    return {"worst_std_z": worst_std, "worst_mean_z": worst_mean, "pooled_ratio": float(np.mean(ratios)),
            "exact": (exact_equal, exact_total), "conv_weights": n_weights}


def _is_norm(model: torch.nn.Module, name: str) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, (torch.nn.InstanceNorm3d, torch.nn.BatchNorm3d, torch.nn.InstanceNorm2d))


def init_rows(load: Loader) -> list[Row]:
    rows = []
    for arch in INIT_PLANS:
        s = init_stats(*init_networks(load, arch))
        rows += [
            Row("initialisation", f"{arch}: worst per-layer |std diff| in standard errors "
                                  f"({s['conv_weights']} conv weights)", f"{s['worst_std_z']:.2f}", "< 6",
                s["worst_std_z"] < 6),
            Row("initialisation", f"{arch}: worst per-layer |mean diff| in standard errors",
                f"{s['worst_mean_z']:.2f}", "< 6", s["worst_mean_z"] < 6),
            Row("initialisation", f"{arch}: mean std ratio ours / nnU-Net", f"{s['pooled_ratio']:.4f}", "1",
                abs(s["pooled_ratio"] - 1) < 0.01),
            Row("initialisation", f"{arch}: biases and norm parameters equal", f"{s['exact'][0]}/{s['exact'][1]}",
                "reference", s["exact"][0] == s["exact"][1]),
        ]
    return rows
