"""Test-wide settings: one intra-op thread per test process.

``make test`` runs two pytest workers on two cores; more PyTorch threads than free cores makes
CPU kernels many times slower (spinning OpenMP threads), so each worker uses one.
"""

import torch

torch.set_num_threads(1)
