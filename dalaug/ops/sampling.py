"""Beta variates drawn from a caller's ``torch.Generator``, on any device, without host syncs.

``torch.distributions.Beta`` and ``torch._standard_gamma`` take no generator, so seeding them means
seeding the global RNG. Here a Gamma(a) variate is Marsaglia & Tsang's (2000) squeeze-rejection
sampler, vectorised: every sample draws a fixed number of candidate rounds at once and keeps the
first accepted one, so there is no data-dependent loop. A round is accepted with probability above
0.95 (shape >= 1), so all rounds fail with probability below 1e-10.

Shapes below 1 use the boost Gamma(a) = Gamma(a + 1) * U^(1/a), in log space: for small a the
product underflows float32, and Beta = G1 / (G1 + G2) becomes 0/0. In log space
Beta = sigmoid(log G1 - log G2) stays accurate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_ROUNDS = 8


def log_gamma_variates(
    shape: float, n: int, *, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """Logarithms of ``n`` Gamma(shape, 1) variates, float32 (n,) on ``device``.

    Args:
        shape: the Gamma shape parameter, > 0.
        n: number of variates.
        device: where to draw them.
        generator: ``torch.Generator`` on ``device``, or None for torch's default one.

    Returns:
        float32 tensor (n,) of log-Gamma variates.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> log_gamma_variates(2.0, 3, device=torch.device("cpu"), generator=g).shape
        torch.Size([3])
    """
    # Marsaglia-Tsang on shape + 1 (always >= 1), then the boost back to `shape`.
    d = shape + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn(n, _ROUNDS, generator=generator, device=device)
    u = torch.rand(n, _ROUNDS, generator=generator, device=device)
    v = (1.0 + c * x) ** 3
    log_v = torch.log(v.clamp_min(torch.finfo(v.dtype).tiny))
    accept = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
    # argmax returns the first maximal index: the first accepted round (round 0 if none was).
    first = accept.to(torch.uint8).argmax(dim=1, keepdim=True)
    log_gamma = math.log(d) + log_v.gather(1, first).squeeze(1)
    boost = torch.rand(n, generator=generator, device=device)
    return log_gamma + torch.log(boost) / shape


def sample_beta(
    a: float, b: float, n: int, *, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """``n`` Beta(a, b) variates, float32 (n,) on ``device``, drawn from ``generator``.

    Args:
        a, b: the Beta parameters, > 0.
        n: number of variates.
        device: where to draw them.
        generator: ``torch.Generator`` on ``device``, or None for torch's default one.

    Returns:
        float32 tensor (n,) with values in [0, 1]. Float32 cannot hold values within 6e-8 of 1, so
        for small a, b a share of draws rounds to exactly 1 (Beta(0.1, 0.1): about 10%); near 0
        the float32 grid is fine. Either way a weight that close to 1 mixes nothing visible.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> lam = sample_beta(1.0, 1.0, 4, device=torch.device("cpu"), generator=g)
        >>> bool(((lam >= 0) & (lam <= 1)).all())
        True
    """
    log_a = log_gamma_variates(a, n, device=device, generator=generator)
    log_b = log_gamma_variates(b, n, device=device, generator=generator)
    return torch.sigmoid(log_a - log_b)
