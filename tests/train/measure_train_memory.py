"""Measure the peak host memory of a few real MAT training steps on CPU, to fit the estimate
``bytes ≈ a + per_rank_batch · (c + b · resolution²)`` that ``mat-train`` warns with
(mat_kernels/train/preflight.py: MEM_BASE = a, MEM_PER_IMAGE = c, MEM_PER_PIXEL = b).

Not a test: run by hand (minutes per configuration on a small CPU):

    PYTHONPATH=$PWD python tests/train/measure_train_memory.py 128:1 128:2 128:4 256:1

Every configuration runs in a fresh process (two training steps of the real networks: step 0
includes the R1 pass, the largest; the VGG19 perceptual loss with random weights; fp32; one
thread) and reports its peak resident set size (``ru_maxrss``). The fit is least squares over
the configurations given (at least two resolutions and two batch sizes).
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _one(res: int, batch: int, amp: str) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from mat_kernels.train import TrainConfig, train
    from mat_kernels.train.losses import VGG19Features

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    rng = np.random.RandomState(0)
    for i in range(max(batch, 2)):
        Image.fromarray(rng.randint(0, 256, (res, res, 3)).astype(np.uint8)).save(f"{data}/{i}.png")
    vgg = os.path.join(tmp, "vgg19-dcbbb3f4.pth")
    torch.save(VGG19Features("conv5_4").state_dict(), vgg)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kw = dict(data=data, out_dir=os.path.join(tmp, "run"), resolution=res, batch=batch, total_steps=2, workers=0,
              progress=False, device="cpu", mbstd_group=min(batch, 8), amp=amp, vgg_path=vgg, tensorboard=False,
              export_weights=False)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in kw.items() if k in names})
    t = time.time()
    train(cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"resolution": res, "batch": batch, "amp": amp, "peak_bytes": peak, "import_bytes": base,
            "seconds": round(time.time() - t, 1)}


def main(specs) -> None:
    rows = []
    for spec in specs:
        res, batch, *amp = spec.split(":")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, __file__, "--one", res, batch, amp[0] if amp else "off"],
                             env=env, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) >= 3:
        import numpy as np
        x = np.array([[1.0, r["batch"], r["batch"] * r["resolution"] ** 2] for r in rows])
        y = np.array([float(r["peak_bytes"]) for r in rows])
        (a, c, b), *_ = np.linalg.lstsq(x, y, rcond=None)
        print(json.dumps({"MEM_BASE": a, "MEM_PER_IMAGE": c, "MEM_PER_PIXEL": b,
                          "max_rel_residual": float(np.max(np.abs(x @ [a, c, b] - y) / y))}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(_one(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
    else:
        main(sys.argv[1:])
