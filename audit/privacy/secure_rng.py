"""Secret randomness for the parts of a DP mechanism its guarantee rests on.

A differential-privacy guarantee holds only against an adversary who cannot predict the noise or
the sampling the accountant's amplification relies on. A generator seeded from the user's seed
(written into configs and model metadata) gives neither: anyone holding the seed can replay the
noise and subtract it. Everything here is therefore seeded from the operating system's entropy
pool (``secrets``, i.e. ``os.urandom``) afresh for every run, and the seed is never stored or
returned.

Opacus' own ``secure_mode`` would draw from ``torchcsprng`` (a CSPRNG over ``/dev/urandom``);
that package is not available for current torch releases, and ``PrivacyEngine(secure_mode=True)``
refuses to start without it. So the privacy noise and the Poisson sampling use ordinary
generators with *secret* seeds instead:

* torch: ``torch.Generator`` (Mersenne Twister) seeded with 64 bits from ``os.urandom`` — for
  Opacus' noise (``noise_generator``) and its Poisson ``DPDataLoader``;
* numpy: ``numpy.random.Generator`` (PCG64) seeded with 128 bits from ``os.urandom`` — for the
  book-keeping Poisson sampler and the central-DP noise of the federation.

These are not cryptographically secure generators: an adversary who saw hundreds of raw outputs
could in principle recover the state. The outputs are never released raw (only after being added
to clipped gradients or updates), and no floating-point hardening of the Gaussian sampler
(Opacus' secure-mode noise) is applied; both limits are recorded in every DP claim
(:data:`NOISE_SOURCE`). The user's seed keeps everything else reproducible (initial weights,
data splits, shuffles outside the private mechanism).
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

__all__ = [
    "NOISE_SOURCE",
    "SAMPLING_SOURCE",
    "secure_numpy_generator",
    "secure_seed",
    "secure_torch_generator",
]

#: How the privacy noise is drawn (recorded in DP claims; nothing here reproduces the noise).
NOISE_SOURCE = (
    "os-entropy: a generator seeded per run with fresh bits from os.urandom, never stored "
    "(Opacus secure_mode needs torchcsprng, which is not available; no floating-point hardening)"
)
#: How the Poisson sampling the accountant's amplification assumes is drawn.
SAMPLING_SOURCE = "os-entropy: Poisson sampling from a generator seeded per run from os.urandom, never stored"


def secure_seed(bits: int = 64) -> int:
    """A fresh seed of ``bits`` bits from the operating system's entropy pool."""
    return secrets.randbits(bits)


def secure_torch_generator() -> Any:
    """A ``torch.Generator`` seeded from ``os.urandom`` (64 bits, torch's seed width)."""
    import torch

    return torch.Generator().manual_seed(secure_seed(63))


def secure_numpy_generator() -> np.random.Generator:
    """A numpy ``Generator`` (PCG64) seeded with 128 bits from ``os.urandom``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(secure_seed(128))))
