"""mat_kernels.official: our modules inside networks built by (stand-ins of) the official code.

The stand-ins in ``tests/official_standins`` have the official class names, module paths,
persistence wrapper, constructor and forward signatures and attribute names (mat-spec.md §1-§3,
§7); each test installs fresh copies in ``sys.modules``.
"""
from __future__ import annotations

import copy
import pickle
import pickletools
import sys
import types
import warnings

import pytest
import torch
import torch.nn as nn

from mat_kernels import official
from mat_kernels.nn import Conv2dLayer, Conv2dLayerPartial, FullyConnectedLayer, SwinTransformerBlock, WindowAttention
from mat_kernels.testing import assert_close
from tests.official_standins import install

OURS = {"FullyConnectedLayer": FullyConnectedLayer, "Conv2dLayer": Conv2dLayer,
        "Conv2dLayerPartial": Conv2dLayerPartial, "WindowAttention": WindowAttention,
        "SwinTransformerBlock": SwinTransformerBlock}


@pytest.fixture
def mat(monkeypatch):
    ns = install(monkeypatch)
    yield ns
    for name in ns.persistence.imported_names:  # modules the unpickler created
        sys.modules.pop(name, None)


def _inputs(batch=2, res=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, res, res, generator=g)
    masks = torch.ones(batch, 1, res, res)
    masks[0, :, : res * 3 // 4, :] = 0  # a hole larger than a window: fully invalid windows
    masks[1] = (torch.rand(1, res, res, generator=g) > 0.6).float()
    return images, masks


def _build(mat, seed=0, **kwargs):
    torch.manual_seed(seed)
    return mat.mat.TinyStage(**kwargs)


def _twins(mat):
    """An official stand-in network and an identical copy (same values, distinct tensors)."""
    net = _build(mat)
    ref = _build(mat)
    for (n, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), n
    return net, ref


def _run(net, images, masks):
    images = images.clone().requires_grad_(True)
    out, mask = net(images, masks)
    (out.square().sum() + out.sum()).backward()
    return out, mask, images.grad


def _assert_same_run(net, ref, images, masks, check_mask=True):
    """net and ref give the same output, new mask and input gradient (fp32 tolerance); returns
    ref's output and new mask."""
    y, m, gx = _run(net, images, masks)
    y_ref, m_ref, gx_ref = _run(ref, images, masks)
    assert_close(y, y_ref, "swin_block", "fwd", name="output")
    if check_mask:
        assert torch.equal(m, m_ref), "mask"
    assert_close(gx, gx_ref, "swin_block", "bwd", name="d images")
    return y_ref, m_ref


def _types_by_path(net):
    return {name: type(m) for name, m in net.named_modules()}


def _names_by_path(net):
    return {name: type(m).__name__ for name, m in net.named_modules()}


# ----------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------

def test_convert_replaces_official_modules_and_keeps_the_numbers(mat):
    net, ref = _twins(mat)
    before = net.state_dict()
    params_before = [(n, p) for n, p in net.named_parameters()]
    types_before = _types_by_path(net)
    # The reference backend: the official op grouping, so gradients agree to the elementwise fp32
    # tolerance (auto on CPU runs sdpa, whose fused backward rounds differently: the relative
    # error on this test's 1e8-sized bias gradients is ~1e-4).
    out = official.convert(net, backend="reference")
    assert out is net

    kinds = {}
    for name, m in net.named_modules():
        base = official._official_base(types_before[name])
        if base is not None and base.__name__ in official.DEFAULT_LAYERS:
            assert isinstance(m, OURS[base.__name__]), f"{name}: {type(m)} was not converted"
            kinds[base.__name__] = kinds.get(base.__name__, 0) + 1
    assert set(kinds) == set(official.DEFAULT_LAYERS)
    # Conv2dLayer is opt-in
    assert not isinstance(net.conv_first.conv, Conv2dLayer)

    # same tensors: keys, order, values and storage
    after = net.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert after[k].data_ptr() == before[k].data_ptr() and torch.equal(after[k], before[k]), k
    assert [(n, p) for n, p in net.named_parameters()] == params_before
    assert net.tran[0].blocks[1].attn_mask is not None and net.tran[0].blocks[0].attn_mask is None

    images, masks = _inputs()
    _, m_ref = _assert_same_run(net, ref, images, masks)
    assert 0 < m_ref.mean() < 1 or 0 < masks.mean() < 1
    grads_ref = dict(ref.named_parameters())
    for n, p in net.named_parameters():
        assert p.grad is not None, n
        assert_close(p.grad, grads_ref[n].grad, "swin_block", "bwd", name=f"d {n}")


def test_convert_report_names_replaced_and_skipped(mat):
    net = _build(mat)
    # An official-looking module that is not a faithful official class: a user subclass.
    class MyBlock(mat.mat.SwinTransformerBlock):
        pass
    net.extra = MyBlock(16, [8, 8], 2, window_size=4)
    # A class with an official name from another library.
    Alien = type("FullyConnectedLayer", (nn.Linear,), {"__module__": "somewhere.else"})
    net.alien = Alien(3, 3)
    # An official module whose attributes do not add up.
    net.broken = mat.basic_module.FullyConnectedLayer(4, 4, activation="lrelu")
    net.broken.activation = "gelu"

    with pytest.warns(UserWarning, match="unconverted"):
        _, report = official.convert(net, return_report=True)
    n_blocks = 4  # two BasicLayers of depth 2; MyBlock's children are official and converted
    assert report.replaced["SwinTransformerBlock"] == n_blocks
    assert report.replaced["WindowAttention"] == n_blocks + 1
    assert report.replaced["Conv2dLayerPartial"] == 4
    assert ("tran.0.blocks.1", "SwinTransformerBlock") in report.replaced_paths
    assert report.not_selected["Conv2dLayer"] == 4
    assert report.no_drop_in["BasicLayer"] == 2 and report.no_drop_in["TinyStage"] == 1
    skipped = {path: reason for path, _, reason in report.skipped}
    assert set(skipped) == {"extra", "alien", "broken"}
    assert "subclasses the official" in skipped["extra"]
    assert "not defined in" in skipped["alien"]
    assert "activation 'gelu'" in skipped["broken"]
    assert type(net.extra) is MyBlock and type(net.alien) is Alien
    assert not isinstance(net.broken, FullyConnectedLayer)
    text = str(report)
    assert "SwinTransformerBlock x4" in text and "skipped extra" in text and "Conv2dLayer x4" in text

    # a second call converts nothing more and says so
    with pytest.warns(UserWarning):
        _, again = official.convert(net, return_report=True)
    assert sum(again.replaced.values()) == 0
    assert again.already["SwinTransformerBlock"] == n_blocks


def test_convert_keeps_optimizer_mode_hooks_dtype(mat):
    net, ref = _twins(mat)
    net.tran[1].eval()
    ref.tran[1].eval()
    net.double()
    ref.double()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    calls = []
    block = net.tran[0].blocks[1]
    block.register_forward_hook(lambda mod, args, out: calls.append(type(mod)))
    modes = {n: m.training for n, m in net.named_modules()}

    official.convert(net, backend="reference")
    assert isinstance(block, SwinTransformerBlock) and block.backend == "reference"
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in net.parameters()}

    images, masks = (t.double() for t in _inputs())
    for model, o in ((net, opt), (ref, opt_ref)):
        o.zero_grad()
        _run(model, images, masks)
        o.step()
    assert calls and calls[0] is type(block)
    ref_params = dict(ref.named_parameters())
    moved = 0
    for n, p in net.named_parameters():
        assert_close(p, ref_params[n], "layers", "fwd", dtype=torch.float32, name=n)
        moved += 1
    assert moved == len(ref_params)


def test_convert_conv2dlayer_when_selected(mat):
    net, ref = _twins(mat)
    _, report = official.convert(net, layers=official.CONVERTIBLE, return_report=True)
    assert report.replaced["Conv2dLayer"] == 4
    assert isinstance(net.tran[1].downsample.conv.conv, Conv2dLayer)
    images, masks = _inputs()
    _assert_same_run(net, ref, images, masks, check_mask=False)


def test_converted_block_accepts_every_official_call_form(mat):
    torch.manual_seed(0)
    blk = mat.mat.SwinTransformerBlock(16, [8, 8], 2, window_size=4, shift_size=2, mlp_ratio=2.)
    ref = copy.deepcopy(blk)
    official.convert(blk)
    x = torch.randn(2, 64, 16)
    mask = (torch.rand(2, 64, 1) > 0.5).float()
    y_ref, m_ref = ref(x, (8, 8), mask)
    for call in (lambda: blk(x, (8, 8), mask), lambda: blk(x, torch.Size([8, 8]), mask=mask),
                 lambda: blk(x, [8, 8], mask), lambda: blk(x=x, x_size=(8, 8), mask=mask)):
        y, m = call()
        assert_close(y, y_ref, "swin_block", "fwd")
        assert torch.equal(m, m_ref)
    y, m = blk(x, torch.Size([8, 8]))
    assert m is None
    assert_close(y, ref(x, (8, 8), None)[0], "swin_block", "fwd")
    # the attention called alone, as the official block calls it
    xw = torch.randn(8, 16, 16)
    attn_ref = ref.attn
    assert isinstance(blk.attn, WindowAttention)
    mw = (torch.rand(8, 16, 1) > 0.5).float()
    shift = ref.calculate_mask((8, 8))
    for args, kwargs in (((xw, mw), dict(mask=shift)), ((xw,), {}), ((xw, None, shift), {})):
        out, new = blk.attn(*args, **kwargs)
        out_ref, new_ref = attn_ref(*args, **kwargs)
        assert_close(out, out_ref, "swin_block", "fwd")
        assert (new is None and new_ref is None) or torch.equal(new, new_ref)


def test_converted_network_pickles_as_official_and_deepcopies_as_ours(mat):
    net, ref = _twins(mat)
    official.convert(net)
    data = pickle.dumps(net)
    names = {arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    assert not any("mat_kernels" in n for n in names), "a converted network must pickle without our classes"
    back = pickle.loads(data)  # rebuilt by the (stand-in) official loader from fresh module copies
    assert _names_by_path(back) == _names_by_path(ref)
    assert not any(isinstance(m, tuple(OURS.values())) for m in back.modules())
    images, masks = _inputs()
    with torch.no_grad():
        assert torch.equal(back(images, masks)[0], ref(images, masks)[0])

    dup = copy.deepcopy(net)
    # official parents deep-copy through their persistence record (fresh class copies, as the
    # official code does); the converted modules keep their converted classes
    assert _names_by_path(dup) == _names_by_path(net)
    for (path, t), (_, t_dup) in zip(_types_by_path(net).items(), _types_by_path(dup).items()):
        if issubclass(t, tuple(OURS.values())):
            assert t_dup is t, path
    assert dup.tran[0].blocks[0].attn.q.weight.data_ptr() != net.tran[0].blocks[0].attn.q.weight.data_ptr()
    with torch.no_grad():
        assert torch.equal(dup(images, masks)[0], net(images, masks)[0])


def test_convert_network_loaded_from_official_pickle(mat):
    # legacy.load_network_pkl rebuilds every class from the pickled source in a fresh
    # "_imported_module_<hex>" module: those classes must be recognised too.
    net, ref = _twins(mat)
    mat.persistence._module_by_src.clear()  # as if written by another version of the files
    loaded = pickle.loads(pickle.dumps(net))
    assert type(loaded.tran[0].blocks[0]).__mro__[1].__module__.startswith("_imported_module_")
    _, report = official.convert(loaded, return_report=True)
    assert report.replaced["SwinTransformerBlock"] == 4 and not report.skipped
    assert isinstance(loaded.tran[0].blocks[0], SwinTransformerBlock)
    images, masks = _inputs()
    _assert_same_run(loaded, ref, images, masks)


def test_convert_rejects_bad_arguments(mat):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got int"):
        official.convert(42)
    with pytest.raises(ValueError, match="backend must be one of"):
        official.convert(nn.Linear(2, 2), backend="fast")
    with pytest.raises(ValueError, match="layers contains"):
        official.convert(nn.Linear(2, 2), layers=["Linear"])
    with pytest.raises(TypeError, match="layers must be a sequence"):
        official.convert(nn.Linear(2, 2), layers="SwinTransformerBlock")
    plain = nn.Sequential(nn.Linear(2, 2))
    _, report = official.convert(plain, return_report=True)
    assert not report.replaced and not report.skipped and type(plain[0]) is nn.Linear


# ----------------------------------------------------------------------------------------------
# patch
# ----------------------------------------------------------------------------------------------

def test_patch_then_build_uses_ours_and_undo_restores(mat):
    snapshot = dict(vars(mat.mat))
    ref = _build(mat)
    undo = official.patch(mat.mat)
    assert sorted(undo.report.patched) == sorted(official.DEFAULT_LAYERS)
    net = _build(mat)  # same seed: the official constructors run, so the same initial weights
    types_ref = _types_by_path(ref)
    for name, m in net.named_modules():
        base = official._official_base(types_ref[name])
        if base is not None and base.__name__ in official.DEFAULT_LAYERS:
            assert isinstance(m, OURS[base.__name__]), name
    sd, sd_ref = net.state_dict(), ref.state_dict()
    assert list(sd) == list(sd_ref)
    for k in sd:
        assert torch.equal(sd[k], sd_ref[k]), k
    images, masks = _inputs()
    y_ref, m_ref = _assert_same_run(net, ref, images, masks)
    # snapshots written by the official training loop stay official (loaded after undo below)
    snapshot_pkl = pickle.dumps(copy.deepcopy(net))
    assert b"mat_kernels" not in snapshot_pkl

    # Loading an official pickle while patched (generate_image.py, --resume): the loader finds
    # our classes in networks.mat; modules whose children stay official fall back to official.
    loaded = pickle.loads(pickle.dumps(ref))
    assert _names_by_path(loaded) == _names_by_path(ref)
    assert isinstance(loaded.conv_first, Conv2dLayerPartial)
    assert not isinstance(loaded.tran[0].blocks[0], SwinTransformerBlock)  # its FCs come from basic_module
    y_loaded, m_loaded, _ = _run(loaded, images, masks)
    assert_close(y_loaded, y_ref, "swin_block", "fwd")
    assert torch.equal(m_loaded, m_ref)

    again = official.patch(mat.mat)  # harmless
    assert again.report.already and not again.report.patched
    again()
    assert isinstance(mat.mat.SwinTransformerBlock, type) and mat.mat.SwinTransformerBlock is not \
        snapshot["SwinTransformerBlock"]
    undo()
    assert vars(mat.mat).keys() == snapshot.keys()
    assert all(vars(mat.mat)[k] is v for k, v in snapshot.items())
    undo()  # twice: harmless
    assert _types_by_path(_build(mat)) == types_ref
    back = pickle.loads(snapshot_pkl)
    assert _types_by_path(back) == types_ref
    with torch.no_grad():
        assert_close(back(images, masks)[0], y_ref, "swin_block", "fwd")


def test_unpatch_and_patch_of_basic_module(mat):
    snapshot = dict(vars(mat.basic_module))
    undo = official.patch(mat.basic_module, layers=["FullyConnectedLayer", "Conv2dLayer"])
    assert undo.report.patched == ["FullyConnectedLayer", "Conv2dLayer"]
    fc = mat.basic_module.FullyConnectedLayer(4, 5, activation="lrelu")
    assert isinstance(fc, FullyConnectedLayer) and fc.in_features == 4
    assert official.unpatch(mat.basic_module) == ["FullyConnectedLayer", "Conv2dLayer"]
    assert all(vars(mat.basic_module)[k] is v for k, v in snapshot.items())
    assert official.unpatch(mat.basic_module) == []


def test_patch_rejects_bad_arguments(mat):
    import os
    with pytest.raises(TypeError, match="mat_module must be the imported official module"):
        official.patch(42)
    with pytest.raises(ValueError, match="mat_module must be one of the official modules .* got module 'os'"):
        official.patch(os)
    empty = types.ModuleType("networks.mat")
    with pytest.warns(UserWarning, match="changed nothing"):
        undo = official.patch(empty)
    assert undo.report.patched == [] and len(undo.report.skipped) == len(official.DEFAULT_LAYERS)
    assert "not defined in the module" in str(undo.report)
    assert vars(empty).keys() == {"__name__", "__doc__", "__package__", "__loader__", "__spec__"}
    undo()


# ----------------------------------------------------------------------------------------------
# torch.compile and autocast after convert
# ----------------------------------------------------------------------------------------------

def test_convert_then_bf16_autocast(mat):
    net, ref = _twins(mat)
    official.convert(net)
    images, masks = _inputs()
    with torch.no_grad():
        y32, m32 = ref(images, masks)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, m = net(images, masks)
            y_off, m_off = ref(images, masks)
    assert y.dtype == y_off.dtype
    assert torch.equal(m.float(), m_off.float())
    assert_close(y.float(), y32, "model", "fwd", torch.bfloat16, reference=y_off.float())


def _check_compiled_block(mat, backend):
    net, ref = _twins(mat)
    official.convert(net)
    block, block_ref = net.tran[0].blocks[1], ref.tran[0].blocks[1]
    compiled = torch.compile(block, backend=backend)
    x = torch.randn(2, 64, 16, requires_grad=True)
    for mask in ((torch.rand(2, 64, 1) > 0.5).float(), None):
        y, m = compiled(x, torch.Size([8, 8]), mask)
        y_ref, m_ref = block_ref(x, (8, 8), mask)
        assert_close(y, y_ref, "swin_block", "fwd")
        assert (m is None and m_ref is None) or torch.equal(m, m_ref)
        g, = torch.autograd.grad(y.sum(), x)
        g_ref, = torch.autograd.grad(y_ref.sum(), x)
        assert_close(g, g_ref, "swin_block", "bwd")


def test_convert_then_torch_compile(mat):
    # aot_eager traces the converted classes through dynamo and autograd without inductor's
    # code generation (over a minute on two CPU cores); inductor runs in the extended suite.
    _check_compiled_block(mat, "aot_eager")


@pytest.mark.extended
def test_convert_then_torch_compile_inductor(mat):
    _check_compiled_block(mat, "inductor")
