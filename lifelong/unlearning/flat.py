"""A module's parameters as views into one flat buffer, for the length of one unlearning update.

An update takes hundreds to thousands of tiny steps, and on the small models here a step costs mostly
per-call overhead, not arithmetic. With the parameters and their gradients as views into two flat
buffers, zeroing the gradients, the optimizer step and the forgetting penalty's closed-form gradient are
one tensor operation each instead of one per parameter tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class FlatParameters:
    """Re-seat ``module``'s trainable parameters (and gradients) as views into one buffer each.

    Until :meth:`release`, train through :attr:`param` (one ``nn.Parameter`` whose ``.grad`` the module's
    backward fills in place) and clear gradients with :meth:`zero_grad`, never with ``set_to_none``: that
    would detach the per-parameter gradients from the flat buffer.

    Raises:
        ValueError: no trainable parameters, or parameters of mixed dtype or device (one buffer cannot hold
            them).
    """

    def __init__(self, module: nn.Module) -> None:
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the module has no trainable parameters")
        kinds = {(p.dtype, p.device) for _, p in named}
        if len(kinds) > 1:
            raise ValueError(f"parameters of mixed dtype/device {sorted(map(str, kinds))} cannot share one buffer")
        self.names = [n for n, _ in named]
        self._params = [p for _, p in named]
        with torch.no_grad():
            self.param = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in self._params]))
        self.param.grad = torch.zeros_like(self.param)
        offset = 0
        for p in self._params:
            n = p.numel()
            p.data = self.param.data[offset : offset + n].view_as(p)
            p.grad = self.param.grad[offset : offset + n].view_as(p)
            offset += n

    def flatten(self, by_name: Mapping[str, torch.Tensor], missing: float | None = None) -> torch.Tensor:
        """Per-parameter tensors laid out like :attr:`param`; a name absent from ``by_name`` is filled with
        ``missing`` (or raises ``KeyError`` when ``missing`` is None)."""
        parts = []
        for name, p in zip(self.names, self._params, strict=True):
            if name in by_name:
                parts.append(by_name[name].detach().reshape(-1).to(self.param.dtype))
            elif missing is None:
                raise KeyError(f"no tensor for parameter {name!r}")
            else:
                parts.append(torch.full((p.numel(),), missing, dtype=self.param.dtype, device=self.param.device))
        return torch.cat(parts)

    def zero_grad(self) -> None:
        self.param.grad.zero_()

    def release(self) -> None:
        """Give every parameter its own storage again (safetensors refuses tensors that share memory)."""
        with torch.no_grad():
            for p in self._params:
                p.data = p.data.clone()
                p.grad = None
