"""Backend selection over whole networks, argument checks, the fused-vs-reference comparison
and the 512 forward."""
from __future__ import annotations

import logging

import pytest
import torch

from mat_kernels import backends
from mat_kernels.models import Discriminator, Generator, MappingNet, set_backend
from mat_kernels.nn.attention import SwinTransformerBlock
from mat_kernels.nn.blocks import BasicLayer, PatchMerging
from mat_kernels.nn.layers import Conv2dLayerPartial, FullyConnectedLayer
from mat_kernels.testing import assert_close, assert_mask_equal

from ._parity import parity_inputs


def meta_generator(res=256):
    with torch.device("meta"):
        return Generator(512, 0, 512, res, 3)


def test_set_backend_reaches_every_kernel_user():
    G = meta_generator()
    assert G.set_backend("reference") is G
    blocks = [m for m in G.modules() if isinstance(m, SwinTransformerBlock)]
    pconvs = [m for m in G.modules() if isinstance(m, Conv2dLayerPartial)]
    fcs = [m for m in G.modules() if isinstance(m, FullyConnectedLayer)]
    assert len(blocks) == 14 and len(pconvs) == 12  # conv_first, 2 enc_conv, 2 merge, 2 upsample, 5 stage convs
    users = [m for m in G.modules() if hasattr(type(m), "backend")]
    assert all(m.__dict__.get("backend") == "reference" for m in users)
    assert set(map(type, users)) >= {SwinTransformerBlock, Conv2dLayerPartial, FullyConnectedLayer}
    set_backend(G, "auto")
    assert all(m.backend == "auto" for m in blocks + pconvs + fcs)
    with torch.device("meta"):
        D = Discriminator(0, 256, 3)
    assert D.set_backend("triton") is D
    assert all(m.backend == "triton" for m in D.modules() if hasattr(type(m), "backend"))
    with pytest.raises(ValueError, match="backend"):
        set_backend(G, "fastest")
    with pytest.raises(TypeError, match="model"):
        set_backend("G", "auto")


def test_forced_backend_that_cannot_run_says_why():
    layer = Conv2dLayerPartial(2, 2, 3)
    layer.backend = "cuda"
    with pytest.raises(RuntimeError, match="cuda"):
        layer(torch.randn(1, 2, 8, 8), torch.ones(1, 1, 8, 8))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="img_resolution"):
        Generator(512, 0, 512, 300, 3)
    with pytest.raises(ValueError, match="img_resolution"):
        Discriminator(0, 3, 3)
    G = meta_generator()
    ws = torch.zeros(1, 10, 512, device="meta")
    img = torch.zeros(1, 3, 256, 256, device="meta")
    with pytest.raises(ValueError, match="masks_in"):
        G.synthesis(img, torch.zeros(1, 3, 256, 256, device="meta"), ws)
    with pytest.raises(ValueError, match="images_in"):
        G.synthesis(img[:, :2], torch.zeros(1, 1, 256, 256, device="meta"), ws)
    with pytest.raises(ValueError, match="multiples of img_resolution"):
        G.synthesis(torch.zeros(1, 3, 128, 128, device="meta"), torch.zeros(1, 1, 128, 128, device="meta"), ws)
    with pytest.raises(ValueError, match="ws"):
        G.synthesis(img, torch.zeros(1, 1, 256, 256, device="meta"), ws[:, :9])
    with pytest.raises(ValueError, match="z must"):
        G.mapping(torch.zeros(1, 3, device="meta"), None)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis.dec.Dec_32x32.conv0(torch.zeros(1, 512, 16, 16, device="meta"),
                                        torch.zeros(1, 1536, device="meta"), noise_mode="off")


def test_truncation_cutoff_only_touches_leading_ws():
    mapping = MappingNet(z_dim=8, c_dim=0, w_dim=8, num_ws=10, num_layers=2).eval()
    with torch.no_grad():
        mapping.w_avg.normal_()
        z = torch.randn(2, 8)
        full = mapping(z, None)
        cut = mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    assert full.shape == (2, 10, 8)
    assert torch.equal(cut[:, 3:], full[:, 3:])
    assert torch.equal(cut[:, :3], torch.lerp(mapping.w_avg, full[:, :3], 0.5))


def test_conditional_mapping():
    mapping = MappingNet(z_dim=4, c_dim=3, w_dim=8, num_ws=2, num_layers=2)
    assert [n for n, _ in mapping.named_children()][:1] == ["embed"]
    assert mapping(torch.randn(2, 4), torch.randn(2, 3)).shape == (2, 2, 8)
    with pytest.raises(ValueError, match="c must"):
        mapping(torch.randn(2, 4), None)


def _tiny_stage():
    """A merge + 2 Swin blocks (one shifted) + partial conv, dim 12: every kernel the backends
    swap (window attention, attention mask update, partial-conv mask rule), at interpreter size."""
    torch.manual_seed(5)
    layer = BasicLayer(dim=12, input_resolution=[8, 8], depth=2, num_heads=6, window_size=4,
                       downsample=PatchMerging(12, 12, down=2))
    x = torch.randn(2, 16 * 16, 12)
    mask = torch.ones(2, 16 * 16, 1)
    mask[0, :160] = 0    # most of sample 0 is a hole (whole windows invalid after merging)
    mask[1, ::3] = 0
    return layer, x, mask


def test_triton_backend_equals_reference_on_a_stage(caplog):
    """Under TRITON_INTERPRET=1 (set by conftest without CUDA) or on CUDA: set_backend('triton')
    routes attention and both mask rules to Triton and matches set_backend('reference')."""
    facts = dict(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"), dtype=torch.float32,
                 head_dim=2, window_size=4, mask_dtype=torch.float32)
    why = backends.not_supported_reasons("triton", "window_attention", facts)
    if why:
        pytest.skip("Triton backend cannot run here: " + "; ".join(why))
    layer, x, mask = _tiny_stage()
    device = facts["device"]
    layer, x, mask = layer.to(device), x.to(device), mask.to(device)
    with torch.no_grad():
        set_backend(layer, "reference")
        ref, ref_size, ref_mask = layer(x, (16, 16), mask)
        caplog.set_level(logging.DEBUG, logger="mat_kernels")
        set_backend(layer, "triton")
        out, size, out_mask = layer(x, (16, 16), mask)
    chosen = " ".join(r.getMessage() for r in caplog.records)
    assert "window_attention: backend=triton chose triton" in chosen
    assert "partial_conv_mask_update: backend=triton chose triton" in chosen
    assert size == ref_size == (8, 8)
    assert_close(out, ref, "swin_block", "fwd", torch.float32, name="stage output")
    assert_mask_equal(out_mask, ref_mask)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "auto"])
def test_fused_generator_equals_reference_on_cuda(backend):
    """The real 256 configuration on CUDA: fused kernels vs the reference, same seed."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    G = Generator(512, 0, 512, 256, 3).eval().cuda()
    image, mask, z = (t.cuda() for t in parity_inputs(256))
    outs = {}
    for name in ("reference", backend):
        G.set_backend(name)
        torch.manual_seed(1)
        with torch.no_grad():
            outs[name] = G(image, mask, z, None, noise_mode="const", return_stg1=True)
    assert_close(outs[backend][1], outs["reference"][1], "model", "fwd", torch.float32, name="stage 1")
    assert_close(outs[backend][0], outs["reference"][0], "model", "fwd", torch.float32, name="final")
    known = mask.expand_as(image).bool()
    assert torch.equal(outs[backend][0][known], image[known])


@pytest.mark.extended
def test_generator_512_forward():
    """One batch-1 forward of the 512 network (about a minute on 2 CPU cores, hence extended)."""
    G = Generator(512, 0, 512, 512, 3).eval()
    image, mask, z = parity_inputs(512)
    torch.manual_seed(0)
    with torch.no_grad():
        out, out_stg1 = G(image, mask, z, None, noise_mode="const", return_stg1=True)
    assert out.shape == out_stg1.shape == (1, 3, 512, 512)
    assert torch.isfinite(out).all() and torch.isfinite(out_stg1).all()
    known = mask.expand_as(image).bool()
    assert torch.equal(out[known], image[known]) and torch.equal(out_stg1[known], image[known])
    with torch.no_grad():
        torch.manual_seed(0)
        none = G(image, mask, z, None, noise_mode="none")
    assert none.shape == out.shape and torch.isfinite(none).all()


@pytest.mark.parametrize("res", [256, 512])
def test_shape_flow_on_meta_tensors(res):
    """The whole forward of both networks at both released sizes, shapes only (meta tensors, no
    arithmetic), including a conditional discriminator; the 512 values run in the extended test."""
    with torch.device("meta"):
        G = Generator(512, 0, 512, res, 3)
        D = Discriminator(c_dim=5, img_resolution=res, img_channels=3)
        image, mask, z = torch.zeros(2, 3, res, res), torch.zeros(2, 1, res, res), torch.zeros(2, 512)
        out, out_stg1 = G(image, mask, z, None, noise_mode="const", return_stg1=True)
        logit, logit_stg1 = D(out, mask, out_stg1, torch.zeros(2, 5))
    assert out.shape == out_stg1.shape == (2, 3, res, res)
    assert logit.shape == logit_stg1.shape == (2, 1)
    assert [n for n, _ in D.named_children()][0] == "mapping"


# ----------------------------------------------------------------------------------------------
# Mask and image dtypes at the networks' inputs (issue #15)
# ----------------------------------------------------------------------------------------------


def _stage_inputs(res=128):
    g = torch.Generator().manual_seed(5)
    img = torch.rand(1, 3, res, res, generator=g) * 2 - 1
    mask = torch.ones(1, 1, res, res)
    mask[..., res // 4: 3 * res // 4, res // 8: res // 2] = 0
    return img, mask, torch.randn(1, 8, 512, generator=g)


def _run_seeded(net, *args, **kwargs):
    torch.manual_seed(7)  # the always-on Bernoulli maps
    with torch.no_grad():
        return net(*args, **kwargs)


def test_first_stage_takes_bool_masks_and_low_precision_inputs():
    from mat_kernels.models import FirstStage
    torch.manual_seed(0)
    net = FirstStage(3, img_resolution=128).eval()
    img, mask, ws = _stage_inputs()
    img, ws = img.half(), ws.bfloat16()
    # cast to the fp32 parameters: the same as running the rounded values in fp32
    out = _run_seeded(net, img, mask.bool(), ws)
    assert out.dtype == torch.float32
    assert torch.equal(out, _run_seeded(net, img.float(), mask, ws.float()))


def test_networks_take_bool_masks_and_refuse_other_masks():
    torch.manual_seed(0)
    G = Generator(512, 0, 512, 128, 3).eval()
    D = Discriminator(0, 128, 3).eval()
    img, mask, _ = _stage_inputs()
    z = torch.randn(1, 512)
    for a, b in zip(_run_seeded(D, img.half(), mask.bool(), img), _run_seeded(D, img.half().float(), mask, img)):
        assert torch.equal(a, b)
    calls = {"G": lambda m: G(img, m, z), "synthesis": lambda m: G.synthesis(img, m, torch.zeros(1, 8, 512)),
             "first_stage": lambda m: G.synthesis.first_stage(img, m, torch.zeros(1, 8, 512)),
             "D": lambda m: D(img, m, img)}
    for name, call in calls.items():
        with pytest.raises(TypeError, match=r"masks_in must be bool or floating .* got torch.uint8"):
            call((mask * 255).to(torch.uint8))
        with pytest.raises(TypeError, match="masks_in must be bool or floating"):
            call(mask.long())
        with pytest.raises(ValueError, match=r"masks_in must hold values in \[0, 1\].*\[0, 255\].*divided by 255"):
            call(mask * 255)
        with pytest.raises(ValueError, match=r"masks_in must hold values in \[0, 1\].*\[-1, 1\]"):
            call(mask * 2 - 1)
        with pytest.raises(ValueError, match="masks_in must hold values in"):
            call(torch.full_like(mask, float("nan")))
    with pytest.raises(TypeError, match="images_in must be a floating tensor"):
        G(((img + 1) * 127.5).to(torch.uint8), mask, z)
    with pytest.raises(TypeError, match="images_stg1 must be a floating tensor"):
        D(img, mask, img.to(torch.uint8))


def test_encoder_and_decoder_cast_low_precision_inputs_outside_autocast():
    torch.manual_seed(0)
    S = Generator(512, 0, 512, 128, 3).eval().synthesis
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 7, 128, 128, generator=g).half()
    with torch.no_grad():
        feats = S.enc(x)
        assert all(f.dtype == torch.float32 for f in feats.values())
        assert all(torch.equal(a, b) for a, b in zip(feats.values(), S.enc(x.float()).values()))
        args = [torch.randn(1, 512, 16, 16, generator=g), torch.randn(1, S.num_layers, 512, generator=g),
                torch.randn(1, 1024, generator=g)]
        low = [a.bfloat16() for a in args] + [{k: v.bfloat16() for k, v in feats.items()}]
        out = S.dec(*low, noise_mode="const")
        want = S.dec(*[a.float() for a in low[:3]], {k: v.float() for k, v in low[3].items()}, noise_mode="const")
    assert out.dtype == torch.float32 and torch.equal(out, want)
