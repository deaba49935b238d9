"""Opacus: the Gaussian noise of DP-SGD, drawn as Opacus draws it.

What it bypasses: ``opacus.optimizers.optimizer._generate_noise``, the private function every
Opacus optimizer's ``add_noise`` calls (plain mode: one ``torch.normal(0, std)`` of the
reference's shape, dtype and device; secure mode: one discarded draw, then the sum of four draws
halved, against floating-point attacks, Holohan et al. 2021). The book-keeping optimizer
(:mod:`audit.privacy.bookkeeping`) draws its secure-mode and zero-σ noise through
:func:`generate_noise` so that, on the tested Opacus line, it is Opacus' own function (fixes to
it apply); the public fallback is the same sequence of ``torch.normal`` calls on the same
generator (tested draw for draw). Benefit: fidelity, not speed (the same calls either way).

Off switch: ``TRUSTAUDIT_COMPAT_OPACUS=0`` (or ``false``/``off``/``no``) — the public
re-implementation is used, as it is when the installed Opacus is outside ``SUPPORTED``.
"""

from __future__ import annotations

from typing import Any

from audit._compat import _gate

__all__ = ["SUPPORTED", "enabled", "generate_noise", "installed_version"]

#: Opacus versions whose ``_generate_noise`` was read and tested: lower <= version < upper
SUPPORTED = ("1.6", "1.7")


def installed_version() -> str | None:
    return _gate.installed_version("opacus")


def enabled() -> bool:
    """Opacus' private function is called: the switch is on and Opacus is in ``SUPPORTED``."""
    return _gate.enabled("opacus", installed_version(), SUPPORTED)


def generate_noise(std: float, reference: Any, generator: Any = None, secure_mode: bool = False) -> Any:
    """N(0, std²) noise shaped like ``reference`` (a tensor), drawn from ``generator``."""
    if enabled():
        try:
            from opacus.optimizers.optimizer import _generate_noise
        except ImportError:
            pass
        else:
            return _generate_noise(std=std, reference=reference, generator=generator, secure_mode=secure_mode)
    return _public_noise(std, reference, generator, secure_mode)


def _public_noise(std: float, reference: Any, generator: Any, secure_mode: bool) -> Any:
    """Opacus 1.6's noise with public torch calls only, draw for draw."""
    import torch

    zeros = torch.zeros(reference.shape, device=reference.device, dtype=reference.dtype)
    if std == 0:
        return zeros
    if not secure_mode:
        return torch.normal(mean=0, std=std, size=reference.shape, device=reference.device,
                            generator=generator, dtype=reference.dtype)
    # secure: one draw thrown away, then four summed and halved (the sum's std is 2σ)
    torch.normal(mean=0, std=std, size=(1, 1), device=reference.device, generator=generator)
    total = zeros
    for _ in range(4):
        total += torch.normal(mean=0, std=std, size=reference.shape, device=reference.device,
                              generator=generator)
    return total / 2
