"""G and D at 256 under bf16 autocast (forward and backward) and with bf16/fp16 weights, against
the same networks in fp32; bounds and their derivation in ``mat_kernels.testing``."""
from __future__ import annotations

import copy

import pytest
import torch

from mat_kernels.models import Discriminator, Generator
from mat_kernels.testing import assert_close

RES = 256


def _inputs(batch=2):
    g = torch.Generator().manual_seed(3)
    img = torch.rand(batch, 3, RES, RES, generator=g) * 2 - 1
    mask = torch.ones(batch, 1, RES, RES)
    mask[0, :, 16:240, 16:240] = 0  # a large hole: every attention window of stage 1 inside it is all-hole
    if batch > 1:
        mask[1, :, : RES // 2] = 0
    z = torch.randn(batch, 512, generator=g)
    return img, mask, z


def _autocast(device_type, dtype):
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else torch.autocast(device_type, enabled=False)


def _g_step(G, img, mask, z, dtype, device_type="cpu"):
    """Outputs and parameter gradients of a fixed random projection of both outputs."""
    G.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the two Bernoulli maps of G
    with _autocast(device_type, dtype):
        out, stg1 = G(img, mask, z, noise_mode="const", return_stg1=True)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out.device)
    ((out.float() * r).sum() + (stg1.float() * r).sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in G.parameters() if p.grad is not None])
    return out.detach().float(), stg1.detach().float(), grads


def _d_step(D, img, mask, stg1, dtype, device_type="cpu"):
    D.zero_grad(set_to_none=True)
    with _autocast(device_type, dtype):
        logits, logits_stg1 = D(img, mask, stg1)
    (logits.float().sum() + logits_stg1.float().sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in D.parameters() if p.grad is not None])
    return torch.cat([logits, logits_stg1]).detach().float(), grads


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return Generator(512, 0, 512, RES, 3).train(), Discriminator(0, RES, 3).train()


def test_generator_bf16_autocast_forward_backward(nets):
    G, _ = nets
    img, mask, z = _inputs()
    ref = _g_step(G, img, mask, z, None)
    out = _g_step(G, img, mask, z, torch.bfloat16)
    assert_close(out[0], ref[0], "G", "fwd", torch.bfloat16, "image")
    assert_close(out[1], ref[1], "G_stg1", "fwd", torch.bfloat16, "stage-1 image")
    assert_close(out[2], ref[2], "G", "bwd", torch.bfloat16, "parameter gradients")
    # known pixels are still copied exactly (in the autocast dtype: the copy is an fp32 op here)
    known = mask.expand_as(img).bool()
    assert torch.equal(out[0][known], img[known])


def test_discriminator_bf16_autocast_forward_backward(nets):
    _, D = nets
    img, mask, _ = _inputs()
    stg1 = img.flip(-1)
    ref = _d_step(D, img, mask, stg1, None)
    out = _d_step(D, img, mask, stg1, torch.bfloat16)
    assert_close(out[0], ref[0], "D", "fwd", torch.bfloat16, "logits")
    assert_close(out[1], ref[1], "D", "bwd", torch.bfloat16, "parameter gradients")


def test_generator_bf16_weights_inference(nets):
    G, _ = nets
    img, mask, z = _inputs(batch=1)
    G = copy.deepcopy(G).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        ref, ref1 = G(img, mask, z, noise_mode="const", return_stg1=True)
        Gb = G.to(torch.bfloat16)
        torch.manual_seed(1)
        out, out1 = Gb(img, mask, z, noise_mode="const", return_stg1=True)  # fp32 inputs are accepted
    assert out.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in Gb.parameters())
    assert_close(out, ref, "G_weights", "fwd", torch.bfloat16, "image")
    assert_close(out1, ref1, "G_stg1_weights", "fwd", torch.bfloat16, "stage-1 image")


@pytest.mark.extended
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_weights_discriminator_and_fp16_generator_run(nets, dtype):
    """G.half() is slow on CPU (fp16 convolutions), hence extended; finiteness only."""
    G, D = (copy.deepcopy(n).eval().to(dtype) for n in nets)
    img, mask, z = _inputs(batch=2)
    with torch.no_grad():
        out = G(img, mask, z, noise_mode="const")
        logits = torch.cat(D(img, mask, img))
    assert out.dtype == dtype and logits.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(logits).all()


def test_channels_last_inputs_give_the_same_results(nets):
    """Convolutions accept and keep channels_last; a seed draws the same Bernoulli maps in either layout."""
    G, D = (copy.deepcopy(n).eval() for n in nets)
    img, mask, z = _inputs(batch=1)
    cl = torch.channels_last
    with torch.no_grad():
        torch.manual_seed(1)
        ref = G(img, mask, z, noise_mode="const")
        torch.manual_seed(1)
        out = G(img.to(memory_format=cl), mask.to(memory_format=cl), z, noise_mode="const")
        ref_d = torch.cat(D(img, mask, ref))
        out_d = torch.cat(D(img.to(memory_format=cl), mask.to(memory_format=cl), ref.to(memory_format=cl)))
        enc = G.synthesis.enc.EncConv_Block_256x256
        x = torch.cat([mask - 0.5, img, img * mask], dim=1).to(memory_format=cl)
        kept = [conv(x).is_contiguous(memory_format=cl) for conv in (enc.conv0,)]
        kept.append(enc.conv1(enc.conv0(x)).is_contiguous(memory_format=cl))
    assert all(kept)
    assert_close(out, ref, "channels_last", "fwd", torch.float32, "image")
    assert_close(out_d, ref_d, "channels_last", "fwd", torch.float32, "logits")


# ------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_cuda_autocast_forward_backward_with_fused_backends(nets, backend, dtype):
    """G and D on CUDA under bf16/fp16 autocast with a fused attention backend, against the same
    networks in fp32 with the reference backend."""
    from mat_kernels import backends
    facts = dict(device=torch.device("cuda"), dtype=dtype, head_dim=30, window_size=16, mask_dtype=torch.float32)
    why = backends.not_supported_reasons(backend, "window_attention", facts)
    if why:
        pytest.skip(f"{backend}: {'; '.join(why)}")
    G, D = (copy.deepcopy(n).cuda() for n in nets)
    img, mask, z = (t.cuda() for t in _inputs())
    G.set_backend("reference")
    ref = _g_step(G, img, mask, z, None, "cuda")
    G.set_backend(backend)
    out = _g_step(G, img, mask, z, dtype, "cuda")
    assert_close(out[0], ref[0], "G", "fwd", torch.bfloat16, "image")
    assert_close(out[1], ref[1], "G_stg1", "fwd", torch.bfloat16, "stage-1 image")
    assert_close(out[2], ref[2], "G", "bwd", torch.bfloat16, "parameter gradients")
    D.set_backend(backend)
    ref_d = _d_step(D, img, mask, img.flip(-1), None, "cuda")
    out_d = _d_step(D, img, mask, img.flip(-1), dtype, "cuda")
    assert_close(out_d[0], ref_d[0], "D", "fwd", torch.bfloat16, "logits")
    assert_close(out_d[1], ref_d[1], "D", "bwd", torch.bfloat16, "parameter gradients")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_half_weights_inference(nets, dtype):
    G, D = (copy.deepcopy(n).eval().cuda() for n in nets)
    img, mask, z = (t.cuda() for t in _inputs())
    with torch.no_grad():
        torch.manual_seed(1)
        ref = G(img, mask, z, noise_mode="const")
        torch.manual_seed(1)
        out = G.to(dtype)(img, mask, z, noise_mode="const")
        logits = torch.cat(D.to(dtype)(img, mask, img))
    assert out.dtype == dtype and torch.isfinite(logits).all()
    # bf16's bound covers fp16 (fp16 rounds 8x finer; its range is not reached here)
    assert_close(out.float(), ref, "G_weights", "fwd", torch.bfloat16, "image")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_cuda_compiled_generator_with_fused_backend_matches_eager(nets, backend):
    """Inductor around the fused attention custom ops: one graph (no break inside attention)."""
    from mat_kernels import backends
    facts = dict(device=torch.device("cuda"), dtype=torch.float32, head_dim=30, window_size=16, mask_dtype=None)
    why = backends.not_supported_reasons(backend, "window_attention", facts)
    if why:
        pytest.skip(f"{backend}: {'; '.join(why)}")
    torch._dynamo.reset()
    G = copy.deepcopy(nets[0]).eval().cuda().set_backend(backend)
    img, mask, z = (t.cuda() for t in _inputs(batch=1))
    with torch.no_grad():
        torch.manual_seed(1)
        ref = G(img, mask, z, noise_mode="const")  # also imports every backend module
        explanation = torch._dynamo.explain(G)(img, mask, z, noise_mode="const")
        torch.manual_seed(1)
        out = torch.compile(G)(img, mask, z, noise_mode="const")
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert_close(out, ref, "compiled", "fwd", torch.float32, "image")
