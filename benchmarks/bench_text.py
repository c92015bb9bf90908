"""(i) Text: tokenisation and encoding throughput, and one training epoch on womens_reviews.

* Tokenisation: the review texts of womens_reviews into hashed n-gram ids
  (``data.text_tokens.HashedTokenizer``, done once when the data is loaded), reviews per CPU
  second.
* Encoding: the ``hashed_bag`` encoder of configs/womens_reviews.yaml on those ids, forward only,
  batches of 256, reviews per CPU second.
* One training epoch of MoE-Retriever (a retrieval epoch, after the warm-up) and of the zero
  model on the first seed's training split (70 % of 23,486 reviews), CPU seconds, their ratio and
  the peak resident memory of each epoch.

``--quick`` (the smoke run of the tests): the first 600 reviews.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, base_parser, finish, interleaved, peak_rss_mb, reset_peak_rss, start, table  # noqa: E402

CONFIG = ROOT / "configs" / "womens_reviews.yaml"


def setup(method: str, dataset, overrides: list[str]):
    from moe_retriever.config import load_config
    from moe_retriever.data.bank import RetrievalBank
    from moe_retriever.data.partitions import prepare_seed
    from moe_retriever.methods import build_model
    from moe_retriever.training.fitting import seed_everything
    from moe_retriever.training.trainer import Trainer

    cfg = load_config(CONFIG, [f"method={method}", "train.progress=false", "train.device=cpu", *overrides])
    data = prepare_seed(cfg, dataset, 0)
    seed_everything(0)
    model = build_model(cfg, data.train.modalities, dataset.n_classes)
    trainer = Trainer(model, cfg.train, RetrievalBank(data.train), torch.device("cpu"), 0)
    return cfg, data, trainer


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    start(args)
    from moe_retriever.data.sources.womens_reviews import load_womens_reviews, read_reviews
    from moe_retriever.data.text_tokens import HashedTokenizer

    n = 600 if args.quick else None
    texts = read_reviews()["Review Text"].tolist()[:n]
    c0 = time.process_time()
    tokens = HashedTokenizer(1024)(texts)
    tokenise_s = time.process_time() - c0
    present = int(tokens.present.sum())

    dataset = load_womens_reviews()
    if n is not None:
        dataset = dataset.subset(range(n))
    overrides = ["train.batch_size=32"] if args.quick else []
    moe_cfg, moe_data, moe = setup("moe_retriever", dataset, overrides)
    _, zero_data, zero = setup("zero", dataset, overrides)

    encoder = moe.model.encoders["review"].eval()
    ids, lengths = moe_data.train.features["review"], moe_data.train.lengths["review"]
    rows = moe_data.train.observed[:, 1].nonzero().flatten()
    c0 = time.process_time()
    with torch.no_grad():
        for start_row in range(0, len(rows), 256):
            part = rows[start_row : start_row + 256]
            encoder(ids[part], lengths[part])
    encode_s = time.process_time() - c0

    epoch = moe_cfg.train.warmup_epochs  # the first retrieval epoch
    peaks: dict[str, float] = {}

    def epoch_of(name, trainer, data):
        def run():
            reset_peak_rss()
            trainer.train_epoch(data.train.full_batch(), epoch)
            peaks[name] = peak_rss_mb()

        return run

    times = interleaved(
        {"moe": epoch_of("moe", moe, moe_data), "zero": epoch_of("zero", zero, zero_data)},
        repeats=1,
        warmup=0,
    )
    ratio = times["moe"].cpu_median / times["zero"].cpu_median
    body = (
        f"{len(texts)} review texts ({present} not empty). Epochs on the training split of "
        f"{len(moe_data.train)} reviews, batch {moe_cfg.train.batch_size}, one run each (CPU "
        f"seconds of the process; peak resident memory of the process during the epoch).\n\n"
        + table(
            ["step", "CPU s", "reviews per CPU s", "peak memory MB"],
            [
                ["tokenise (load time)", tokenise_s, f"{len(texts) / tokenise_s:,.0f}", "-"],
                ["hashed_bag forward", encode_s, f"{len(rows) / encode_s:,.0f}", "-"],
                [
                    "epoch, MoE-Retriever",
                    times["moe"].cpu_median,
                    f"{len(moe_data.train) / times['moe'].cpu_median:,.0f}",
                    f"{peaks['moe']:,.0f}",
                ],
                [
                    "epoch, zero",
                    times["zero"].cpu_median,
                    f"{len(zero_data.train) / times['zero'].cpu_median:,.0f}",
                    f"{peaks['zero']:,.0f}",
                ],
            ],
        )
        + f"\n\nMoE-Retriever / zero, one epoch: **{ratio:.2f}x** CPU time.\n"
    )
    finish(args, "(i) Text: tokenisation, encoding and a training epoch on womens_reviews", body)


if __name__ == "__main__":
    main()
