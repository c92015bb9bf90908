"""FFN experts with stacked weights and sort-based sparse dispatch.

Weights are stored stacked, ``w1: (E, d, h)`` and ``w2: (E, h, d)``. Token-expert assignments are
sorted by expert once; then either

* ``grouped`` (what ``auto`` picks where it applies): the sorted tokens meet the stacked weights
  in one ``grouped_mm`` per layer, whose group boundaries are the cumulative expert loads as a
  tensor. Nothing is padded, no weight is split or copied (whose backward concatenated the
  weights' full gradients every step), and the shapes do not depend on the loads, so the
  dispatch reads nothing back to the host. It needs rows of 16-byte multiples (``dim`` and
  ``hidden`` multiples of 4 in float32); elsewhere ``auto`` falls back to
* ``bmm``: the sorted tokens are scattered into padded ``(E_s, C_s, d)`` buffers and the experts
  run in batched matmuls (fastest for small token counts). The experts are cut into at most
  ``MAX_SEGMENTS`` contiguous segments, each padded only to its own largest load: with per-target
  pools the shared experts receive several times the tokens of a pool expert, and one buffer
  padded to the shared experts' load would be mostly zeros; or
* ``split``: the sorted tokens are split into per-expert chunks and each chunk meets its own
  weight slice from ``unbind(0)`` (fastest for large token counts, no padding).

``bmm`` and ``split`` size their buffers from the loads, read back to the host once per call.

``loop`` (a per-expert mask over all assignments) is kept as the oracle the tests compare with.
No backend ever evaluates an expert on a token that was not routed to it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# above this many assignments the per-expert split beats the padded buffers (measured on 2 CPU
# cores with per-target pools, d = 64, expert hidden 128; see docs/performance.md)
BMM_MAX_ASSIGNMENTS = 8192
# the padded buffers are cut into at most this many contiguous expert segments
MAX_SEGMENTS = 6
# a further cut must save at least this many padded multiply-adds (rows * d * h, both layers):
# below that, the extra batched matmuls cost more than the padding they avoid
MIN_SAVED_MACS = 1 << 20


def gelu(x: Tensor) -> Tensor:
    """GELU of a (rows, hidden) tensor through ATen's own kernel.

    On CPU, oneDNN takes GELU of every contiguous float tensor and caches one compiled kernel per
    shape (up to 1024); the experts' row count is the step's number of routed assignments, new
    almost every step, so that cache grew the resident set for the first ~20 epochs (figure (f)).
    A transposed view is not contiguous, so ATen computes it (the same function; results within
    5e-7), and the transpose of its output is the contiguous result, without a copy.
    """
    if x.device.type != "cpu" or x.dim() != 2 or min(x.shape) < 2:
        return F.gelu(x)  # (a single row or column: its transpose is contiguous too)
    return F.gelu(x.t()).t()


_GROUPED_MM_RUNS: dict[tuple[str, torch.dtype], bool] = {}


def grouped_mm_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``F.grouped_mm`` runs for this device type and dtype, tried once on a tiny input.

    Its kernels differ by device and release: the CPU one takes float32, the CUDA one is
    documented for bfloat16 on recent GPUs, and under ``torch.compile`` its shape function asks
    for bfloat16 whatever the device; elsewhere the dispatch uses ``bmm``/``split``.
    """
    if torch.compiler.is_compiling():
        return False
    key = (device.type, dtype)
    if key not in _GROUPED_MM_RUNS:
        try:
            a = torch.zeros(8, 8, device=device, dtype=dtype)
            b = torch.zeros(2, 8, 8, device=device, dtype=dtype)
            F.grouped_mm(a, b, offs=torch.tensor([4, 8], device=device, dtype=torch.int32))
            _GROUPED_MM_RUNS[key] = True
        except (RuntimeError, NotImplementedError):
            _GROUPED_MM_RUNS[key] = False
    return _GROUPED_MM_RUNS[key]


def padded_segments(
    counts: list[int], row_macs: int, max_segments: int = MAX_SEGMENTS
) -> list[tuple[int, int, int]]:
    """Cut experts ``0..E-1`` into contiguous ``(start, end, capacity)`` segments.

    Each segment is padded to its own largest load (``capacity``); cuts are added greedily where
    they remove the most padding, while they save at least ``MIN_SAVED_MACS``.
    """
    segments = [(0, len(counts))]
    while len(segments) < max_segments:
        best_saving, best_i, best_cut = 0, -1, -1
        for i, (a, b) in enumerate(segments):
            saving, cut = _best_cut(counts, a, b)
            if saving > best_saving:
                best_saving, best_i, best_cut = saving, i, cut
        if best_i < 0 or best_saving * row_macs < MIN_SAVED_MACS:
            break
        a, b = segments[best_i]
        segments[best_i : best_i + 1] = [(a, best_cut), (best_cut, b)]
    return [(a, b, max(counts[a:b])) for a, b in segments]


def _best_cut(counts: list[int], a: int, b: int) -> tuple[int, int]:
    """The cut of segment [a, b) that removes the most padded rows: (rows saved, cut)."""
    if b - a < 2:
        return 0, -1
    suffix_max = [0] * (b - a + 1)
    for j in range(b - 1, a - 1, -1):
        suffix_max[j - a] = max(suffix_max[j - a + 1], counts[j])
    whole = (b - a) * suffix_max[0]
    best_saving, best_cut, prefix_max = 0, -1, 0
    for cut in range(a + 1, b):
        prefix_max = max(prefix_max, counts[cut - 1])
        saving = whole - (cut - a) * prefix_max - (b - cut) * suffix_max[cut - a]
        if saving > best_saving:
            best_saving, best_cut = saving, cut
    return best_saving, best_cut


class FFNExperts(nn.Module):
    def __init__(self, n_experts: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.n_experts, self.dim, self.hidden = n_experts, dim, hidden
        self.w1 = nn.Parameter(torch.empty(n_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(n_experts, dim))
        nn.init.uniform_(self.w1, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
        nn.init.uniform_(self.w2, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    def expert(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` applied densely to ``x`` (used by the loop oracle and by analyses)."""
        return F.gelu(x @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]

    def grouped_applies(self, x: Tensor) -> bool:
        """Whether ``grouped_mm`` takes this input: 16-byte aligned rows, and a kernel for its
        device and dtype (see :func:`grouped_mm_runs`)."""
        size = x.element_size()
        return (
            (self.dim * size) % 16 == 0
            and (self.hidden * size) % 16 == 0
            and x.dtype == self.w1.dtype
            and grouped_mm_runs(x.device, x.dtype)
        )

    def forward(self, x: Tensor, indices: Tensor, weights: Tensor, backend: str = "auto") -> Tensor:
        """y_t = sum_j weights[t, j] * expert_{indices[t, j]}(x_t); x (T, d), indices/weights (T, k)."""
        if backend == "auto":
            if self.grouped_applies(x):
                backend = "grouped"
            else:
                backend = "bmm" if indices.numel() <= BMM_MAX_ASSIGNMENTS else "split"
        if backend == "loop":
            return self._loop(x, indices, weights)
        n_tokens, k = indices.shape
        flat_expert = indices.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        expert_sorted = flat_expert[order]
        token_sorted = order // k
        weight_sorted = weights.reshape(-1)[order].unsqueeze(1)
        x_sorted = x[token_sorted]
        if backend == "grouped":
            y_sorted = self._grouped(x_sorted, expert_sorted)
        elif backend in ("bmm", "split"):
            counts = torch.bincount(flat_expert, minlength=self.n_experts)
            if backend == "bmm":
                y_sorted = self._bmm(x_sorted, expert_sorted, counts)
            else:
                y_sorted = self._split(x_sorted, counts)
        else:
            raise ValueError(f"unknown dispatch backend {backend!r}")
        out = x.new_zeros(n_tokens, self.dim)
        return out.index_add(0, token_sorted, y_sorted * weight_sorted)

    def _grouped(self, x_sorted: Tensor, expert_sorted: Tensor) -> Tensor:
        if not self.grouped_applies(x_sorted):
            raise ValueError(
                f"dispatch 'grouped' needs 16-byte rows: dim {self.dim} and hidden {self.hidden} "
                f"in {x_sorted.dtype} (use 'auto', 'bmm' or 'split')"
            )
        # group e ends after the last assignment to experts 0..e (an idle expert: an empty group);
        # searchsorted rather than bincount, which reads its input's maximum back on a GPU
        ids = torch.arange(self.n_experts, device=expert_sorted.device)
        ends = torch.searchsorted(expert_sorted, ids, right=True, out_int32=True)
        h = gelu(F.grouped_mm(x_sorted, self.w1, offs=ends) + self.b1[expert_sorted])
        return F.grouped_mm(h, self.w2, offs=ends) + self.b2[expert_sorted]

    def _bmm(self, x_sorted: Tensor, expert_sorted: Tensor, counts: Tensor) -> Tensor:
        host_counts = counts.tolist()  # the one host sync of the dispatch: buffer shapes
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(x_sorted.shape[0], device=x_sorted.device) - starts[expert_sorted]
        segments = padded_segments(host_counts, 2 * self.dim * self.hidden)
        # one split per weight (not a slice per segment): its backward is a single concatenation
        sizes = [b - a for a, b, _ in segments]
        params = zip(
            self.w1.split(sizes),
            self.b1.split(sizes),
            self.w2.split(sizes),
            self.b2.split(sizes),
            strict=True,
        )
        outs, first = [], 0
        for (a, b, capacity), (w1, b1, w2, b2) in zip(segments, params, strict=True):
            n = sum(host_counts[a:b])
            if n == 0:
                continue
            # the segment's assignments are contiguous in expert order; row = expert * C + slot
            rows = (expert_sorted[first : first + n] - a) * capacity + slot[first : first + n]
            buf = (
                x_sorted.new_zeros((b - a) * capacity, self.dim)
                .index_copy(0, rows, x_sorted[first : first + n])
                .view(b - a, capacity, self.dim)
            )
            h = torch.baddbmm(b1.unsqueeze(1), buf, w1).view(-1, self.hidden)
            h = gelu(h).view(b - a, capacity, self.hidden)
            y = torch.baddbmm(b2.unsqueeze(1), h, w2)
            outs.append(y.view(-1, self.dim).index_select(0, rows))
            first += n
        if not outs:
            return x_sorted.new_zeros(0, self.dim)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _split(self, x_sorted: Tensor, counts: Tensor) -> Tensor:
        chunks = x_sorted.split(counts.tolist())
        outs = []
        for chunk, w1, b1, w2, b2 in zip(
            chunks, self.w1.unbind(0), self.b1.unbind(0), self.w2.unbind(0), self.b2.unbind(0), strict=True
        ):
            if chunk.shape[0]:
                outs.append(gelu(chunk @ w1 + b1) @ w2 + b2)
        return torch.cat(outs) if outs else x_sorted.new_zeros(0, self.dim)

    def _loop(self, x: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
        out = x.new_zeros(x.shape[0], self.dim)
        for e in range(self.n_experts):
            token, slot = (indices == e).nonzero(as_tuple=True)
            if token.numel():
                y = self.expert(e, x[token]) * weights[token, slot].unsqueeze(1)
                out = out.index_add(0, token, y)
        return out
