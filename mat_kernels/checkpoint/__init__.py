"""Load MAT weights without running code from the checkpoint, and save them in a pickle-free format.

Three on-disk formats are understood (detected from the file contents, not the extension):

(a) **Official released ``.pkl``**: a plain Python pickle of a dict with keys
    ``'G'``, ``'D'``, ``'G_ema'``, ... whose networks are ``torch_utils.persistence`` objects.
    The official loader ``exec()``s the source text stored in every persistent object; here a
    restricted :class:`pickle.Unpickler` turns each such object into an inert
    :class:`PersistentRecord` (class name + state) and refuses every global that is not on a
    short allow-list, so nothing from the file is ever executed. The state dict is then
    rebuilt by walking ``_parameters`` / persistent ``_buffers`` / ``_modules`` exactly as
    ``nn.Module.state_dict()`` would.
(b) **Plain state dicts** written by ``torch.save`` (zip or legacy), read with
    ``torch.load(weights_only=True)``; ``{"G_ema": sd}`` / ``{"state_dict": sd}`` wrappers and
    ``module.`` / ``G_ema.`` key prefixes are accepted (see :func:`remap_state_dict`).
(c) **This package's format**: ``<stem>.safetensors`` weights beside a small ``<stem>.json``
    config (``resolution``, ``z_dim``, ``w_dim``, ``c_dim``, ``img_channels``), written by
    :func:`save_checkpoint`. No pickle at all.

Public entry points: :func:`load_state_dicts`, :func:`load_generator`,
:func:`load_discriminator`, :func:`save_checkpoint`, :func:`remap_state_dict`,
:func:`check_state_dict`, :func:`infer_generator_config`. The restricted unpickler of (a) is
:mod:`.unpickler`; detection, loading, remapping and saving are :mod:`.formats`.
"""
from .errors import CheckpointError, UnsafeCheckpointError
from .formats import (check_state_dict, generator_from_state_dict, infer_discriminator_config,
                      infer_generator_config, load_discriminator, load_generator, load_state_dicts,
                      remap_state_dict, save_checkpoint)
from .unpickler import ModuleStub, PersistentRecord, SafeUnpickler, safe_load_pickle, state_dict_from_record

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "PersistentRecord",
    "ModuleStub",
    "SafeUnpickler",
    "safe_load_pickle",
    "state_dict_from_record",
    "remap_state_dict",
    "check_state_dict",
    "infer_generator_config",
    "generator_from_state_dict",
    "infer_discriminator_config",
    "load_state_dicts",
    "load_generator",
    "load_discriminator",
    "save_checkpoint",
]
