"""State dicts of Generator/Discriminator equal the official manifests: names, order, shapes,
dtypes, parameter/buffer kind and counts, and strict loading of a manifest-shaped dict."""
from __future__ import annotations

import pytest
import torch

from mat_kernels.models import Discriminator, Generator


def build(net: str, res: int):
    # Meta tensors: shapes and names without paying for the random init.
    with torch.device("meta"):
        if net == "generator":
            return Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3)
        return Discriminator(c_dim=0, img_resolution=res, img_channels=3)


@pytest.mark.parametrize("res", [256, 512])
@pytest.mark.parametrize("net", ["generator", "discriminator"])
def test_state_dict_matches_manifest(net, res, request):
    manifest = request.getfixturevalue(f"manifest{res}")
    assert manifest["resolution"] == res
    spec = manifest[net]
    entries = spec["entries"]
    model = build(net, res)
    sd = model.state_dict()
    names = list(sd)
    missing = [n for n in entries if n not in sd]
    extra = [n for n in sd if n not in entries]
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    assert names == list(entries), "same names, different order"
    params = dict(model.named_parameters())
    for name, e in entries.items():
        t = sd[name]
        assert list(t.shape) == e["shape"], name
        assert str(t.dtype).replace("torch.", "") == e["dtype"], name
        assert ("parameter" if name in params else "buffer") == e["kind"], name
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]
    assert sum(b.numel() for n, b in model.named_buffers() if n in sd) == spec["num_buffer_elements"]
    # A dict with exactly the manifest's names and shapes (what an official checkpoint holds)
    # loads strictly.
    official = {n: torch.zeros(e["shape"], device="meta") for n, e in entries.items()}
    model.load_state_dict(official, strict=True, assign=True)
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(dict(list(official.items())[1:]), strict=True, assign=True)


def test_parameter_counts_from_the_spec():
    counts = {(net, res): sum(p.numel() for p in build(net, res).parameters())
              for net in ("generator", "discriminator") for res in (256, 512)}
    assert counts == {("generator", 256): 59_779_834, ("generator", 512): 61_562_518,
                      ("discriminator", 256): 36_083_330, ("discriminator", 512): 36_231_618}
    g = build("generator", 512)
    sub = {name: sum(p.numel() for p in m.parameters()) for name, m in g.synthesis.named_children()}
    assert sum(p.numel() for p in g.mapping.parameters()) == 2_101_248
    assert sub["first_stage"] == 12_063_865
    assert sum(p.numel() for p in g.synthesis.first_stage.tran.parameters()) == 7_182_180
    assert (sub["enc"], sub["to_square"], sub["to_style"], sub["dec"]) == (14_123_328, 131_328, 7_604_736, 25_538_013)
    assert g.synthesis.num_layers == 12 and build("generator", 256).synthesis.num_layers == 10
