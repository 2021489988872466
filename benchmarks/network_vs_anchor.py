"""Cross-check the networks against dynamic_network_architectures 0.4.4 (nnU-Net's), run in the anchor venv.

For each topology: parameter count, ``compute_conv_feature_map_size`` for a few patch sizes, and the outputs of
both networks on the same input after copying the reference's weights into ours in parameter order (this proves
the same structure, not only the same count). Run: ``python benchmarks/network_vs_anchor.py`` (re-executes
itself with the anchor venv's interpreter, which imports amos_autoseg from this checkout).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (architecture, strides, kernels, features, blocks, decoder convs, in_channels, classes, patches)
CONFIGS = {
    "plain3d_aniso": ("PlainConvUNet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                      [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [8, 16, 32, 64], [2, 2, 2, 2], [2, 2, 2], 1, 16,
                      [[20, 56, 40], [12, 24, 32], [13, 27, 33]]),
    "resenc3d": ("ResidualEncoderUNet", [[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 1]],
                 [[3, 3, 3], [3, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]], [8, 16, 32, 48, 48], [1, 2, 2, 2, 2],
                 [1, 1, 1, 1], 2, 4, [[16, 64, 32], [24, 48, 40], [17, 35, 29]]),
    "plain2d": ("PlainConvUNet", [[1, 1], [2, 2], [2, 2], [2, 1]], [[3, 3]] * 4, [8, 16, 32, 32], [2, 2, 2, 2],
                [2, 2, 2], 1, 3, [[48, 40], [33, 21]]),
    "resenc2d": ("ResidualEncoderUNet", [[1, 1], [2, 2], [2, 2]], [[3, 3]] * 3, [8, 16, 24], [1, 3, 4], [1, 1], 3, 5,
                 [[32, 24], [31, 23]]),
    "amos_fullres_plain": ("PlainConvUNet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                           [[1, 3, 3]] + [[3, 3, 3]] * 5, [32, 64, 128, 256, 320, 320], [2] * 6, [2] * 5, 1, 16,
                           [[64, 160, 224]]),
    "amos_resenc_l": ("ResidualEncoderUNet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                      [[1, 3, 3]] + [[3, 3, 3]] * 5, [32, 64, 128, 256, 320, 320], [1, 3, 4, 6, 6, 6], [1] * 5, 1, 16,
                      [[64, 160, 224]]),
}


def _reference(name):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    arch, strides, kernels, feats, blocks, dec, cin, ncls, _ = CONFIGS[name]
    dims = len(strides[0])
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    norm = torch.nn.InstanceNorm3d if dims == 3 else torch.nn.InstanceNorm2d
    common = dict(input_channels=cin, n_stages=len(strides), features_per_stage=feats, conv_op=conv,
                  kernel_sizes=kernels, strides=strides, num_classes=ncls, n_conv_per_stage_decoder=dec,
                  conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    if arch == "PlainConvUNet":
        net = PlainConvUNet(n_conv_per_stage=blocks, **common)
    else:
        net = ResidualEncoderUNet(n_blocks_per_stage=blocks, **common)
    net.apply(net.initialize)
    return net


def _ours(name):
    from amos_autoseg.network import build_network
    from amos_autoseg.planning.plans import NetworkPlan

    arch, strides, kernels, feats, blocks, dec, cin, ncls, _ = CONFIGS[name]
    plan = NetworkPlan(arch, strides, kernels, feats, blocks, dec)
    return build_network(plan, cin, ncls)


SPEED = ("PlainConvUNet", [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 4, [16, 32, 64, 128],
         [2, 2, 2, 2], [2, 2, 2], 1, 16, [[32, 64, 64]])


def speed(repeats: int = 5) -> None:
    """Forward + backward of a small network on the CPU (batch 2, patch 32x64x64), ours vs the reference."""
    import time

    import torch

    CONFIGS["speed"] = SPEED
    x = torch.randn(2, 1, 32, 64, 64)
    y = torch.randint(0, 16, (2, 32, 64, 64))
    times = {}
    for label, make in (("ours", _ours), ("dna", _reference)):
        torch.manual_seed(0)
        net = make("speed")

        def step() -> None:
            out = net(x)
            loss = sum(torch.nn.functional.cross_entropy(o, torch.nn.functional.interpolate(
                y[:, None].float(), size=o.shape[2:], mode="nearest-exact")[:, 0].long()) for o in out)
            loss.backward()
            net.zero_grad(set_to_none=True)

        step()
        best = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            best.append(time.perf_counter() - t)
        times[label] = sorted(best)[len(best) // 2]
    print(f"forward+backward, batch 2, patch 32x64x64, features 16-128, {torch.get_num_threads()} thread(s), "
          f"median of {repeats}")
    print("| ours (s) | dynamic_network_architectures (s) | ratio |")
    print("| --- | --- | --- |")
    print(f"| {times['ours']:.3f} | {times['dna']:.3f} | {times['ours'] / times['dna']:.2f} |")


def main_in_anchor() -> None:
    import torch

    torch.manual_seed(0)
    print("| config | params ours | params dna | fmap ours = dna | outputs max abs diff |")
    print("| --- | --- | --- | --- | --- |")
    for name, cfg in CONFIGS.items():
        ref, ours = _reference(name), _ours(name)
        n_ref = sum(p.numel() for p in ref.parameters())
        n_ours = sum(p.numel() for p in ours.parameters())
        fm = [(int(ours.compute_conv_feature_map_size(p)), int(ref.compute_conv_feature_map_size(p))) for p in cfg[8]]
        ref_params, our_params = list(ref.parameters()), list(ours.parameters())
        assert [p.shape for p in ref_params] == [p.shape for p in our_params], name
        with torch.no_grad():
            for a, b in zip(our_params, ref_params):
                a.copy_(b)
            diff = "n/a (large)"
            if "amos" not in name:
                x = torch.randn(2, cfg[6], *cfg[8][0])
                ref.eval(), ours.eval()
                ya, yb = ours(x), ref(x)
                diff = max(float((a - b).abs().max()) for a, b in zip(ya, yb))
        print(f"| {name} | {n_ours} | {n_ref} | {fm} | {diff} |")


if __name__ == "__main__":
    if os.environ.get("_IN_ANCHOR") == "1":
        sys.path.insert(0, str(ROOT))
        import torch

        torch.set_num_threads(1)
        main_in_anchor()
        speed()
    else:
        sys.path.insert(0, str(ROOT))
        from benchmarks.anchor import nnunet_python

        env = dict(os.environ, _IN_ANCHOR="1", OMP_NUM_THREADS="1")
        sys.exit(subprocess.run([str(nnunet_python()), __file__], env=env).returncode)
