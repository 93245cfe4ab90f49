"""CPU compatibility for XTuner 0.2.0, loaded at interpreter start-up of XTuner's processes on machines without CUDA.

`pipeline.train` puts this folder on `PYTHONPATH` only when torch sees no CUDA device (see README.md here).
XTuner's `SupervisedFinetune` asks `get_torch_device().is_bf16_supported()`, which is `torch.cpu` on such a
machine, and torch 2.13's `torch.cpu` has no `is_bf16_supported`: training a small model on CPU (the tests, a
first try of the pipeline) would fail with an AttributeError before the first step. XTuner only uses the answer
to pick a dtype for flash attention, which CPU runs never use.
"""

try:
    import torch
except ImportError:  # not a torch process: nothing to patch
    torch = None

if torch is not None and not hasattr(torch.cpu, "is_bf16_supported"):
    torch.cpu.is_bf16_supported = lambda including_emulation=True: False
