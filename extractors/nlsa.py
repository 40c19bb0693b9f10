"""NLSA feature extractor (Mei et al., CVPR 2021) without its upsampling tail.

Non-Local Sparse Attention in the EDSR-style residual network of the reference
code (HarukiYqM/Non-Local-Sparse-Attention, ``NLSN``): a 3x3 head conv, a body
of ``n_resblocks`` residual blocks (conv-ReLU-conv scaled by ``res_scale``)
with an NLSA module first and one after every ``attention_every`` blocks, a
3x3 body conv and a global skip from the head. The reference's pixel-shuffle
tail is dropped; a 3x3 conv ``proj`` maps its ``n_feats`` channels to
``out_dim`` (64, the paper's C_out), the extractor's only layer that the
reference lacks (``n_feats == out_dim`` omits it). Default configuration
(32 blocks, 256 feats, ``res_scale`` 0.1, 5 NLSA modules, 4 hash rounds,
chunks of 144): 39,576,472 parameters, of which 147,520 are ``proj``.

NLSA module (``body.<i>`` with ``conv_match.0`` 3x3 to ``channels/reduction``
and ``conv_assembly.0`` 1x1): each of ``n_hashes`` rounds hashes every
pixel's match embedding by a random rotation (spherical LSH: argmax over
``[xR, -xR]`` with ``buckets/2`` rotations), sorts the pixels by bucket
(stable), splits the sorted sequence into chunks of ``chunk_size`` (the tail
repeated to fill the last one), and lets every pixel attend to its own chunk
and the two adjacent ones (unnormalised query, L2-normalised keys, values from
``conv_assembly``). The rounds are combined by a softmax over their
log-sum-exp scores. Output ``res_scale * attention + input``.

Where this differs from the reference, and why:
- ``buckets = min(n + n % 2, 128)`` with ``n = L // chunk_size`` as there, but
  at least 2, and the chunk fill wraps around, so images under 144 pixels work
  (the reference fails on them).
- The rotations are drawn from the global RNG in training (as there) and from
  a generator seeded with ``hash_seed`` in eval mode, so evaluation is
  deterministic and every tile of an image hashes alike.
- Rounds are processed one at a time and combined online, and chunks in blocks
  of bounded size, so memory is O(H W C) instead of the reference's
  O(H W (n_hashes * 3 * chunk_size + 4 C)); the function and the multiply-adds
  are those of the reference (matmuls for its einsums; fvcore counts both as
  the product of all dimensions).

State-dict keys equal the reference's for the body (``sub_mean``, ``add_mean``,
``head.0``, ``body.<i>``), so a released NLSN file loads with its ``tail.*``
dropped (``harness.release_format.load_release_body``). As in the LIIF encoders,
the frozen mean-shift layers are kept for those keys and not applied.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from extractors import EXTRACTORS
from extractors.edsr import ResBlock
from extractors.layers import HeadBodyTrunk, check_no_upsampling, same_conv

MAX_BUCKETS = 128  # the reference's cap on hash buckets
#: Score-block budget (elements of one ``chunk x 3 chunk`` attention block batch).
BLOCK_ELEMENTS = 1 << 22


def lsh_buckets(length: int, chunk_size: int, max_buckets: int = MAX_BUCKETS) -> int:
    """Number of hash buckets for a sequence of ``length`` pixels (even, 2..max_buckets)."""
    n = length // chunk_size
    return max(2, min(n + n % 2, max_buckets))


def _logsumexp(x: torch.Tensor) -> torch.Tensor:
    """``log(sum(exp(x), -1))``, max-shifted (ops fvcore counts as 0, like ``logsumexp``)."""
    m = x.amax(dim=-1, keepdim=True)
    return (m + torch.log(torch.exp(x - m).sum(dim=-1, keepdim=True))).squeeze(-1)


class NonLocalSparseAttention(nn.Module):
    """``(B, C, H, W) -> (B, C, H, W)``: LSH-bucketed non-local attention plus the input."""

    #: read by harness.tiling: features depend on the whole image (no exact tile overlap)
    non_local = True

    def __init__(self, channels: int = 256, reduction: int = 4, n_hashes: int = 4, chunk_size: int = 144,
                 res_scale: float = 0.1, kernel_size: int = 3, max_buckets: int = MAX_BUCKETS, hash_seed: int = 0):
        super().__init__()
        self.conv_match = nn.Sequential(same_conv(channels, channels // reduction, kernel_size))
        self.conv_assembly = nn.Sequential(same_conv(channels, channels, 1))
        self.n_hashes = n_hashes
        self.chunk_size = chunk_size
        self.res_scale = res_scale
        self.max_buckets = max_buckets
        self.hash_seed = hash_seed

    def rotations(self, dim: int, half: int, like: torch.Tensor) -> torch.Tensor:
        """Random rotations ``(dim, n_hashes, half)`` (reference layout), one set per forward."""
        shape = (dim, self.n_hashes, half)
        if self.training:
            return torch.randn(shape, device=like.device, dtype=like.dtype)
        gen = torch.Generator().manual_seed(self.hash_seed)
        return torch.randn(shape, generator=gen).to(device=like.device, dtype=like.dtype)

    def _round(self, match: torch.Tensor, value: torch.Tensor, rot: torch.Tensor):
        """One hash round: ``(B, L, c)``, ``(B, L, C)``, ``(c, half)`` -> ``(B, L, C)``, ``(B, L)``."""
        b, length, c = match.shape
        cv, chunk = value.shape[-1], self.chunk_size
        proj = match @ rot
        codes = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)
        del proj
        order = torch.sort(codes, dim=-1, stable=True).indices  # (B, L): sorted position -> pixel
        n_chunks = -(-length // chunk)
        fill = n_chunks * chunk - length
        pos = torch.arange(n_chunks * chunk, device=match.device)
        pos = torch.where(pos < length, pos, (pos - fill) % length)  # the tail repeated (wrapping)
        idx = order[:, pos].view(b, n_chunks, chunk)
        q = match.gather(1, idx.view(b, -1, 1).expand(-1, -1, c)).view(b, n_chunks, chunk, c)
        k = F.normalize(q, p=2, dim=-1, eps=5e-5)
        out = value.new_empty(b, length, cv)  # in pixel order: each block writes its own pixels
        lse = value.new_empty(b, length)
        step = max(1, BLOCK_ELEMENTS // (b * chunk * 3 * chunk))
        for k0 in range(0, n_chunks, step):
            ks = torch.arange(k0, min(n_chunks, k0 + step), device=match.device)
            adj = torch.stack([ks, (ks - 1) % n_chunks, (ks + 1) % n_chunks], dim=1).flatten()
            nb = ks.numel()
            kk = k.index_select(1, adj).view(b, nb, 3 * chunk, c)
            vv = value.gather(1, idx.index_select(1, adj).view(b, -1, 1).expand(-1, -1, cv))
            vv = vv.view(b, nb, 3 * chunk, cv)
            score = q[:, k0:k0 + nb] @ kk.transpose(-1, -2)  # (B, nb, chunk, 3 chunk)
            block_lse = _logsumexp(score)
            block = (torch.exp(score - block_lse.unsqueeze(-1)) @ vv).view(b, -1, cv)
            n = min(length, (k0 + nb) * chunk) - k0 * chunk  # the fill's copies are dropped
            pixels = order[:, k0 * chunk:k0 * chunk + n]
            out.scatter_(1, pixels.unsqueeze(-1).expand(-1, -1, cv), block[:, :n])
            lse.scatter_(1, pixels, block_lse.view(b, -1)[:, :n])
        return out, lse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        length = h * w
        match = self.conv_match(x).flatten(2).transpose(1, 2)     # (B, L, C / reduction)
        value = self.conv_assembly(x).flatten(2).transpose(1, 2)  # (B, L, C)
        half = lsh_buckets(length, self.chunk_size, self.max_buckets) // 2
        rot = self.rotations(match.shape[-1], half, match)
        acc = den = top = None
        for r in range(self.n_hashes):  # softmax over the rounds' scores, accumulated online
            out, lse = self._round(match, value, rot[:, r])
            if acc is None:
                acc, den, top = out, torch.ones_like(lse), lse
                continue
            new_top = torch.maximum(top, lse)
            a, e = torch.exp(top - new_top), torch.exp(lse - new_top)
            if torch.is_grad_enabled():
                acc = acc * a.unsqueeze(-1) + out * e.unsqueeze(-1)
            else:  # in place: no temporaries of the output's size
                acc.mul_(a.unsqueeze(-1)).add_(out.mul_(e.unsqueeze(-1)))
            den = den * a + e
            top = new_top
        out = (acc / den.unsqueeze(-1)).transpose(1, 2).reshape(b, c, h, w)
        return out * self.res_scale + x


@EXTRACTORS.register("nlsa")
class NLSA(HeadBodyTrunk):
    """NLSA (NLSN) encoder: ``(B, 3, H, W) -> (B, out_dim, H, W)``; scale-agnostic, no window."""

    def __init__(self, n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1,
                 n_hashes: int = 4, chunk_size: int = 144, reduction: int = 4, attention_every: int = 8,
                 out_dim: int = 64, kernel_size: int = 3, hash_seed: int = 0, rgb_range: float = 1.0,
                 n_colors: int = 3, no_upsampling: bool = True):
        super().__init__()
        check_no_upsampling(no_upsampling)
        if n_feats % reduction or attention_every < 1:
            raise ValueError(f"n_feats ({n_feats}) must be a multiple of reduction ({reduction}) "
                             f"and attention_every ({attention_every}) >= 1")

        def attention():
            return NonLocalSparseAttention(n_feats, reduction, n_hashes, chunk_size, res_scale,
                                           hash_seed=hash_seed)

        blocks = [attention()]
        for i in range(n_resblocks):
            blocks.append(ResBlock(n_feats, kernel_size, res_scale))
            if (i + 1) % attention_every == 0:
                blocks.append(attention())
        self._build_trunk(blocks, n_feats, kernel_size, rgb_range, n_colors)
        self.chunk_size = chunk_size
        self.proj = same_conv(n_feats, out_dim, kernel_size) if out_dim != n_feats else nn.Identity()
        self.out_dim = out_dim

    def flops_terms(self, h: int, w: int) -> dict[str, int]:
        """Size terms the FLOPs are an exact linear combination of (harness.flops):
        pixels (convs), pixels padded to whole chunks (attention), pixels times
        rotations per round (hashing)."""
        length = h * w
        chunked = -(-length // self.chunk_size) * self.chunk_size
        return {"HW": length, "chunked": chunked, "hashed": length * (lsh_buckets(length, self.chunk_size) // 2)}

    def forward(self, x: torch.Tensor, scale=None) -> torch.Tensor:
        return self.proj(super().forward(x))
