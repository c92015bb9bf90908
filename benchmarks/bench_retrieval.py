"""(b) Retrieval throughput (missing pairs per second) against batch size, CPU-microseconds per
pair against the released code's ~5-6 ms, and the expert-dispatch backends on this machine.

Retrieval here is everything MoE-Retriever adds for the missing pairs of a batch: drawing the
supporting groups, encoding the drawn bank samples, the context attention and the sparse MoE,
mean-pooled into one embedding per pair. "inference" runs it without gradients in eval mode;
"training" runs it forward and backward in train mode (the backward goes through the intra-modal
encoders too). The observed embeddings it takes as inter-modal context are computed beforehand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RELEASED_US_PER_PAIR, base_parser, finish, interleaved, start, synthetic_setup, table  # noqa: E402
from moe_retriever.models.context import RetrievalInputs  # noqa: E402
from moe_retriever.models.encoders import BatchEncoding  # noqa: E402

TARGET_SPEEDUP = 50.0


def retrieval_rows(args) -> tuple[list[list[object]], float]:

    setup = synthetic_setup("moe_retriever", 0.3)
    model, bank = setup.model, setup.bank
    full = setup.data.train.full_batch()
    sizes = (32,) if args.smoke else (32, 256) if args.quick else (16, 32, 64, 128, 256, 512, 1024)
    repeats = 3 if args.quick else 7
    rows, us_at_32 = [], float("nan")
    for b in sizes:
        batch = full.select(torch.arange(min(b, len(full))))
        pairs = int((~batch.observed).sum())
        with torch.no_grad():
            model.eval()
            emb = model.encode(batch)
        gen = torch.Generator().manual_seed(0)

        def infer() -> None:
            model.eval()
            with torch.no_grad():
                encoded = BatchEncoding(model.encoders, batch, embeddings=emb)
                model.retriever.fill_missing(encoded, batch.observed, RetrievalInputs(bank, gen))

        def train() -> None:
            model.train()
            context = emb.detach().requires_grad_(True)
            encoded = BatchEncoding(model.encoders, batch, embeddings=context)
            filled = model.retriever.fill_missing(encoded, batch.observed, RetrievalInputs(bank, gen))[0]
            filled.sum().backward()
            model.zero_grad(set_to_none=True)

        t = interleaved({"infer": infer, "train": train}, repeats)
        us_infer = 1e6 * t["infer"].cpu_median / pairs
        us_train = 1e6 * t["train"].cpu_median / pairs
        if b == 32:
            us_at_32 = us_train
        rows.append(
            [
                len(batch),
                pairs,
                pairs / t["infer"].wall_median,
                us_infer,
                pairs / t["train"].wall_median,
                us_train,
                f"{RELEASED_US_PER_PAIR[0] / us_train:.0f}x",
            ]
        )
    return rows, us_at_32


def dispatch_rows(args) -> list[list[object]]:
    """Forward+backward ms of the sparse MoE's expert computation per backend, with the routing
    the retriever produces (pools of 8 experts per target + 4 shared, top-4, d 64, hidden 128)."""
    from moe_retriever.models.experts import BMM_MAX_ASSIGNMENTS, FFNExperts

    torch.manual_seed(0)
    n_pools, per_pool, shared, k, d, h = 4, 8, 4, 4, 64, 128
    n_experts = n_pools * per_pool + shared
    experts = FFNExperts(n_experts, d, h)
    allowed = torch.zeros(n_pools, n_experts, dtype=torch.bool)
    for p in range(n_pools):
        allowed[p, p * per_pool : (p + 1) * per_pool] = True
    allowed[:, n_pools * per_pool :] = True
    rows = []
    full = (64, 256, 512, 1024, 2048, 4096, 8192)
    tokens_list = (64,) if args.smoke else (256, 2048) if args.quick else full
    for tokens in tokens_list:
        x = torch.randn(tokens, d, requires_grad=True)
        pools = torch.randint(0, n_pools, (tokens,))
        logits = torch.randn(tokens, n_experts).masked_fill(~allowed[pools], float("-inf"))
        weights, indices = logits.softmax(-1).topk(k, dim=-1)
        backends = ("bmm", "split") if tokens > 2048 else ("bmm", "split", "loop")

        def run(backend: str):
            return lambda: experts(x, indices, weights, backend).sum().backward()

        t = interleaved({b: run(b) for b in backends}, 3 if args.quick else 5)
        ms = {b: 1000 * t[b].cpu_median for b in backends}
        auto = "bmm" if tokens * k <= BMM_MAX_ASSIGNMENTS else "split"
        rows.append(
            [tokens, tokens * k]
            + [ms.get(b, "-") for b in ("bmm", "split", "loop")]
            + [min(ms, key=ms.get), auto]
        )
    return rows


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    start(args)
    rows, us_at_32 = retrieval_rows(args)
    from moe_retriever.models.experts import BMM_MAX_ASSIGNMENTS

    body = (
        "Synthetic task, p = 0.3, 4 modalities, the configured retriever (8 experts per target + "
        "4 shared, top-4). Medians of interleaved repeats; pairs/s from wall-clock, "
        "microseconds per pair from the process CPU time.\n\n"
        + table(
            [
                "batch",
                "missing pairs",
                "inference pairs/s",
                "inference CPU-µs/pair",
                "training pairs/s",
                "training CPU-µs/pair",
                f"vs released {RELEASED_US_PER_PAIR[0] / 1000:.0f} ms/pair",
            ],
            rows,
        )
        + f"\n\nTarget ≥ {TARGET_SPEEDUP:.0f}x fewer CPU-µs per pair than the released code "
        f"(5-6 ms per pair; compared with 5 ms): {RELEASED_US_PER_PAIR[0] / us_at_32:.0f}x at the "
        f"configured batch of 32, training (forward + backward).\n\n"
        + "Expert dispatch backends, forward + backward CPU ms (the retriever's routing, "
        f"d = 64, expert hidden 128, top-4); `auto` uses `bmm` up to {BMM_MAX_ASSIGNMENTS} "
        "assignments:\n\n"
        + table(
            ["tokens", "assignments", "bmm ms", "split ms", "loop ms", "fastest", "auto picks"],
            dispatch_rows(args),
        )
    )
    finish(args, "(b) Retrieval throughput and cost per missing pair", body)


if __name__ == "__main__":
    main()
