"""The authors' DTN algorithm, step by step, as the speed and numerics anchor.

This follows the released module's computation order, per-sample position tensor included: it builds the
``[T, T, 3]`` relative-position tensor, expands it to ``[B, T, T, 3]``, runs ``pos_proj`` on it every forward, takes
the softmax over the source token and multiplies the ``[B, H, C/H, T]`` features by the ``[B, H, T, T]`` matrix. It
only handles what the authors' code handles (square grids, no prefix tokens, the optional ``dtn_pool``). It exists
to be measured against (``dtn-bench bench norms``) and compared with; use :class:`dtn_bench.norms.DTN` for work.
"""

from __future__ import annotations

import torch
from torch import nn

from dtn_bench.norms.dtn import DTN


def relative_indices(side: int) -> torch.Tensor:
    """``[T, T, 3]`` with ``[x_j - x_i, y_j - y_i, dx^2 + dy^2]`` for token ``i = y * side + x``."""
    r = torch.arange(side)
    ind = r.view(1, -1) - r.view(-1, 1)  # ind[a, b] = b - a
    dx = ind.repeat(side, side)
    dy = ind.repeat_interleave(side, dim=0).repeat_interleave(side, dim=1)
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1).float()


class AuthorsDTN(DTN):
    """Same parameters and state dict as :class:`DTN`; the authors' dense computation in ``forward``."""

    def __init__(self, dim: int, num_heads: int, side: int = 14, only_var: bool = False, pool_to: int | None = None,
                 **kw):
        super().__init__(dim, num_heads, grid_size=(side, side), only_var=only_var, pool_to=pool_to, **kw)
        pooled = side // self.pool
        self.register_buffer("rel_indices", relative_indices(pooled).unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x [B, T, C]`` with the authors' dense computation; ``mask`` is ignored."""
        B, T, C = x.shape
        H = self.num_heads
        S = self.grid_size[0]
        xh = x.reshape(B, T, H, -1)
        x = (xh / torch.sqrt((xh * xh).mean(dim=3, keepdim=True) + self.eps)).reshape(B, T, C)
        var_w = torch.sigmoid(self.var_norm_weight)
        pos = self.pos_proj(self.rel_indices.expand(B, -1, -1, -1)).permute(0, 3, 1, 2).softmax(dim=-2)
        mean_ln = x.mean(dim=2)
        var_ln = x.var(dim=2)
        g = x.view(B, S, S, C).permute(0, 3, 1, 2).contiguous()
        k = self.pool
        if k > 1:
            g = nn.functional.avg_pool2d(g, k)
        g = g.reshape(B, H, C // H, -1)
        mean_in = torch.matmul(g, pos)
        var_in = torch.matmul(g * g, pos) - mean_in * mean_in
        if k > 1:
            p = S // k

            def up(t):
                t = t.view(B, H, C // H, p, p, 1).repeat(1, 1, 1, 1, 1, k * k).view(B, H, C // H, p, p, k, k)
                return t.permute(0, 1, 2, 3, 5, 4, 6).reshape(B, H, C // H, -1)

            mean_in, var_in = up(mean_in), up(var_in)
        var = ((1 - var_w.view(1, H, 1, 1)) * var_in + var_w.view(1, H, 1, 1) * var_ln.view(B, 1, 1, -1))
        var = var.view(B, C, T).permute(0, 2, 1)
        if self.only_var:
            y = (x - mean_ln.view(B, T, 1)) / torch.sqrt(var + self.eps)
        else:
            mean_w = torch.sigmoid(self.mean_norm_weight)
            mu = (1 - mean_w.view(1, H, 1, 1)) * mean_in + mean_w.view(1, H, 1, 1) * mean_ln.view(B, 1, 1, -1)
            y = (x - mu.view(B, C, T).permute(0, 2, 1)) / torch.sqrt(var + self.eps)
        return y * self.weight.view(1, 1, C) + self.bias.view(1, 1, C)
