"""Triton kernels of mat_kernels.

``window_attention.py``, ``mask_update.py`` and ``bias_act.py`` hold kernels and their launchers;
``library.py`` registers the ``torch.library`` ops (fakes, autograd) that call the launchers;
``aot_table.py`` lists every launch configuration and ``aot.py`` compiles them (the compile
gate). The backend that calls the ops is :mod:`mat_kernels.backends.triton`.
"""
