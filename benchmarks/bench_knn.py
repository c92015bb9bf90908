"""(h) Neighbour search of similarity-aware retrieval (``sampling: knn``): build time, query time
per missing pair and recall, exact chunked search against the faiss IVF index, N in {1e4, 1e5, 1e6}.

The bank: M = 3 modalities of d = 64, each observed with probability 0.7 (at least one per
sample); embeddings drawn around 256 random centres per modality (unit-variance centres,
noise 0.5 per coordinate), as learned embeddings cluster by class and subgroup, where i.i.d.
Gaussian vectors have no neighbourhood structure for an index to exploit. Queries are the
missing pairs of bank samples with one observed modality hidden (the masked-modality case, so
the sample itself is excluded), their embeddings perturbed by noise 0.2; k = 16 (the default
``knn_k``). Recall@16 of faiss is the share of the exact top 16 it returns. Build time of the
exact search is the normalisation of the bank vectors; the faiss build adds, for each observed
set of the queries (six with M = 3), k-means and the inverted lists of its index. Query time is
per pair, for a batch of pairs searched at once; the median of repeats (one at N = 1e6) on one
thread. Peak RSS is the process's peak so far (the sizes run in increasing order).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, finish, interleaved, peak_rss_mb, start, table  # noqa: E402

M, D, K, CENTRES = 3, 64, 16, 256


def make_bank(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    observed = torch.rand(n, M, generator=g) < 0.7
    observed[~observed.any(dim=1), 0] = True
    centres = torch.randn(M, CENTRES, D, generator=g)
    which = torch.randint(0, CENTRES, (n, M), generator=g)
    emb = centres[torch.arange(M), which]  # (N, M, D)
    for first in range(0, n, 100_000):  # noise in slices: no second bank-sized buffer
        part = emb[first : first + 100_000]
        part.add_(torch.randn(part.shape, generator=g), alpha=0.5)
    return emb, observed


def make_pairs(emb: torch.Tensor, observed: torch.Tensor, p: int, g: torch.Generator):
    """``p`` masked-modality pairs of samples observing two or more modalities."""
    from moe_retriever.data.combinations import observed_to_codes
    from moe_retriever.data.supporting_group import SupportingGroupIndex

    eligible = (observed.sum(dim=1) >= 2).nonzero().squeeze(1)
    rows = eligible[torch.randint(0, eligible.numel(), (p,), generator=g)]
    obs = observed[rows].clone()
    # hide a random observed modality of each
    scores = torch.rand(p, M, generator=g).masked_fill(~obs, -1.0)
    targets = scores.argmax(dim=1)
    obs[torch.arange(p), targets] = False
    queries = emb[rows] + 0.2 * torch.randn(p, M, D, generator=g)
    index = SupportingGroupIndex(observed_to_codes(observed), M)
    required = index.required_sets(observed_to_codes(obs), targets)
    return queries, obs, required, rows


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", help="bank sizes (default 1e4 1e5 1e6; --quick: 1e4)")
    p.add_argument("--json", type=Path, help="also write the raw measurements as JSON")
    args = p.parse_args()
    start(args)
    from moe_retriever.data.combinations import observed_to_codes
    from moe_retriever.models.neighbours import ExactNeighbourSearch, FaissNeighbourSearch, faiss_available

    has_faiss = faiss_available()
    if has_faiss:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    default = [2e3] if args.smoke else [1e4] if args.quick else [1e4, 1e5, 1e6]
    sizes = [int(s) for s in (args.sizes or default)]
    rows, raw = [], []
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        emb, observed = make_bank(n, g)
        n_pairs = 256 if n <= 100_000 else 64
        repeats = 1 if n > 100_000 or args.quick else 3
        queries, obs, required, exclude = make_pairs(emb, observed, n_pairs, g)
        _, exact_build_s, exact_build_cpu = timed(lambda: ExactNeighbourSearch(emb, observed))
        approx = None
        if has_faiss:
            approx, ctor_s, ctor_cpu = timed(lambda: FaissNeighbourSearch(emb, observed))
            exact = approx.exact  # the same vectors; the exact build is timed alone above
            del emb  # the indexes are built from the search's own unit vectors
            # the indexes of the queries' observed sets, built here rather than at first search
            _, index_s, index_cpu = timed(lambda: approx.build(observed_to_codes(obs)))
            build_s, build_cpu = ctor_s + index_s, ctor_cpu + index_cpu
        else:
            exact = ExactNeighbourSearch(emb, observed)
            del emb
        peak = peak_rss_mb()
        fns = {"exact": lambda: exact.search(queries, obs, required, K, exclude)}
        if approx is not None:
            fns["faiss"] = lambda: approx.search(queries, obs, required, K, exclude)
        times = interleaved(fns, repeats, warmup=0 if n > 100_000 else 1)
        _, exact_i = exact.search(queries, obs, required, K, exclude)
        entry = {
            "n": n,
            "pairs": n_pairs,
            "exact_build_s": exact_build_s,
            "exact_build_cpu_s": exact_build_cpu,
            "exact_us_per_pair": 1e6 * times["exact"].wall_median / n_pairs,
            "exact_cpu_us_per_pair": 1e6 * times["exact"].cpu_median / n_pairs,
            "peak_rss_mb": peak,
        }
        row = [f"{n:.0e}", n_pairs, exact_build_s, entry["exact_us_per_pair"], entry["exact_cpu_us_per_pair"]]
        if approx is not None:
            _, approx_i = approx.search(queries, obs, required, K, exclude)
            found = [
                len(set(a) & set(b) - {-1}) / max(1, len(set(b) - {-1}))
                for a, b in zip(approx_i.tolist(), exact_i.tolist(), strict=True)
            ]
            largest = max(approx.indexes.values(), key=lambda index: index.ntotal)
            entry |= {
                "faiss_indexes": len(approx.indexes),
                "faiss_nlist_largest": largest.nlist,
                "faiss_nprobe_largest": largest.nprobe,
                "faiss_build_s": build_s,
                "faiss_build_cpu_s": build_cpu,
                "faiss_us_per_pair": 1e6 * times["faiss"].wall_median / n_pairs,
                "faiss_cpu_us_per_pair": 1e6 * times["faiss"].cpu_median / n_pairs,
                "faiss_recall_at_k": sum(found) / len(found),
            }
            row += [
                f"{len(approx.indexes)}; {largest.nlist} / {largest.nprobe}",
                build_s,
                entry["faiss_us_per_pair"],
                entry["faiss_cpu_us_per_pair"],
                entry["faiss_recall_at_k"],
            ]
        else:
            row += ["faiss not installed", "", "", "", ""]
        rows.append([*row, peak])
        raw.append(entry)
        print(json.dumps(entry), flush=True)
        exact = approx = None  # freed before the next bank is drawn
    headers = [
        "N",
        "pairs",
        "exact build s",
        "exact µs/pair (wall)",
        "exact µs/pair (CPU)",
        "faiss indexes; lists / probed (largest)",
        "faiss build s",
        "faiss µs/pair (wall)",
        "faiss µs/pair (CPU)",
        f"faiss recall@{K}",
        "peak RSS MB",
    ]
    body = (
        f"M = {M} modalities, d = {D}, k = {K}; "
        f"{'faiss-cpu ' + faiss.__version__ if has_faiss else 'no faiss'}."
        "\n\n" + table(headers, rows) + "\n"
    )
    finish(args, "(h) Neighbour search for knn retrieval: exact chunked vs faiss IVF", body)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
