"""Test-suite settings: one torch thread (tiny tensors; the 2-core CI machine is shared)."""
import torch

torch.set_num_threads(1)
