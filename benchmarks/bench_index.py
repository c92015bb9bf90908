"""(c) Supporting-group index: build time and memory for N in {1e3, 1e5, 1e6} bank samples and
M in {2, 4, 6, 8} modalities, and the time to draw the supporting samples of a batch.

Each bank sample observes each modality with probability 0.7 (at least one). Memory is reported
two ways: the bytes of the index's own tensors, and the rise of the process's peak resident set
while building (the kernel's high-water mark is reset just before; it includes temporaries such
as the sort's buffers). The input codes (8 bytes per sample) exist before the build and are not
counted. Sampling draws |mc| supporting samples for every missing pair of 256 samples.

The script runs itself with glibc's mmap threshold fixed at 128 kB, so that every large buffer
is returned to the system when freed; otherwise memory freed by one configuration is reused by
the next and the later rises read as zero.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, finish, interleaved, peak_rss_mb, reset_peak_rss, rss_mb, start, table  # noqa: E402

TARGET_SECONDS, TARGET_MB = 2.0, 200.0
INDEX_TENSORS = ("order", "counts", "block_start", "cumulative", "group_size")


def random_codes(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    from moe_retriever.data.combinations import observed_to_codes

    observed = torch.rand(n, m, generator=generator) < 0.7
    observed[~observed.any(dim=1), 0] = True
    return observed_to_codes(observed)


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    start(args)
    from moe_retriever.data.combinations import codes_to_observed
    from moe_retriever.data.supporting_group import SupportingGroupIndex

    sizes = (1_000,) if args.smoke else (1_000, 100_000) if args.quick else (1_000, 100_000, 1_000_000)
    repeats = 3
    rows, verdict = [], ""
    for n in sizes:
        for m in (2, 4, 6, 8):
            g = torch.Generator().manual_seed(n + m)
            codes = random_codes(n, m, g)
            gc.collect()
            base = rss_mb()
            exact_peak = reset_peak_rss()
            index = SupportingGroupIndex(codes, m)
            peak = peak_rss_mb() - base if exact_peak else float("nan")
            tensor_mb = (
                sum(
                    getattr(index, name).numel() * getattr(index, name).element_size()
                    for name in INDEX_TENSORS
                )
                / 2**20
            )
            del index
            # partial, not a lambda: it binds this iteration's tensors, which the `del` below frees
            build = interleaved(
                {"build": functools.partial(SupportingGroupIndex, codes, m)}, repeats, warmup=0
            )
            index = SupportingGroupIndex(codes, m)
            # the missing pairs of 256 samples drawn like bank samples
            sample_obs = codes_to_observed(codes[:256], m)
            pair_b, pair_t = (~sample_obs).nonzero(as_tuple=True)
            pair_codes = codes[:256][pair_b]
            n_draws = sample_obs.sum(dim=1)[pair_b]
            draw = interleaved({"draw": functools.partial(index.sample, pair_codes, pair_t, n_draws, g)}, 10)
            seconds = build["build"].wall_median
            rows.append(
                [
                    f"{n:.0e}",
                    m,
                    seconds,
                    build["build"].cpu_median,
                    tensor_mb,
                    peak,
                    len(pair_b),
                    1000 * draw["draw"].wall_median,
                ]
            )
            if n == 1_000_000 and m == 8:
                verdict = (
                    f"N = 1e6, M = 8: built in {seconds:.3f} s (target < {TARGET_SECONDS} s), "
                    f"index tensors {tensor_mb:.1f} MB, peak RSS rise {peak:.1f} MB "
                    f"(target < {TARGET_MB:.0f} MB)."
                )
            del index, codes
    body = (
        f"Median of {repeats} builds.\n\n"
        + table(
            [
                "N",
                "M",
                "build s (wall)",
                "build s (CPU)",
                "index tensors MB",
                "peak RSS rise MB",
                "pairs drawn",
                "draw ms (wall)",
            ],
            rows,
        )
        + ("\n\n" + verdict if verdict else "")
        + "\n"
    )
    finish(args, "(c) Supporting-group index: build time, memory, sampling", body)


if __name__ == "__main__":
    main()
