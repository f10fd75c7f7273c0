"""Long-text similarity: does an embedding tell paragraphs of one article from paragraphs of others?

Short-sentence training (SimCSE on 32-token sentences) can specialise a model
to short sentences of one domain; STS does not show it. This check embeds
whole paragraphs (up to ``max_length`` tokens) of WikiText articles, up to
four long paragraphs from every article with two or more; each paragraph is a
query whose nearest other paragraph by cosine should come from its own
article. Reports the mean reciprocal rank x100 of the first paragraph of the
same article among all others (and recall@1 x100): 100 when every paragraph's
nearest neighbour is from its own article.

Shapes: N paragraphs, D embedding width.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from nlpssl.data.documents import read_wikitext_articles
from nlpssl.evaluation.sts import Pooling, encode

#: split -> WikiText-2 file: select on valid, report test
SPLIT_FILES = {"dev": "wiki.valid.tokens", "test": "wiki.test.tokens"}


def paragraph_groups(articles: list[list[str]], per_article: int = 4) -> tuple[list[str], list[int]]:
    """Up to ``per_article`` paragraphs of every article that has two or more, and each one's article number."""
    usable = [paragraphs[:per_article] for paragraphs in articles if len(paragraphs) >= 2]
    texts = [paragraph for paragraphs in usable for paragraph in paragraphs]
    labels = [article for article, paragraphs in enumerate(usable) for _ in paragraphs]
    return texts, labels


def retrieval_scores(embeddings: torch.Tensor, labels: list[int]) -> dict[str, float]:
    """MRR x100 and recall@1 x100 of each row of (N, D) ``embeddings`` finding another row with its label by cosine.

    Example::

        retrieval_scores(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]]), [0, 0, 1, 1])   # both 100.0
    """
    unit = F.normalize(embeddings.double(), dim=-1)
    similarity = (unit @ unit.T).fill_diagonal_(float("-inf"))  # (N, N), a paragraph is not its own neighbour
    same = torch.tensor(labels)[:, None] == torch.tensor(labels)[None, :]  # (N, N)
    same.fill_diagonal_(False)
    best_own = similarity.masked_fill(~same, float("-inf")).max(dim=1, keepdim=True).values  # (N, 1)
    ranks = 1 + ((similarity > best_own) & ~same).sum(dim=1)  # (N,) 1 = a paragraph of the same article first
    return {"mrr": float((1.0 / ranks).mean() * 100), "recall_at_1": float((ranks == 1).double().mean() * 100)}


def evaluate_long_text(
    model: torch.nn.Module, tokenizer, wikitext_dir: str | Path, split: str = "dev", pooling: Pooling = "mean",
    max_length: int = 256, **encode_kwargs,
) -> dict[str, float]:
    """Same-article paragraph retrieval on WikiText-2 ``split`` ("dev": valid, "test"): ``{"mrr", "recall_at_1"}``.

    Example::

        evaluate_long_text(model, tokenizer, "../shared/data/wikitext2", "test")["mrr"]
    """
    texts, labels = paragraph_groups(read_wikitext_articles(Path(wikitext_dir) / SPLIT_FILES[split]))
    return retrieval_scores(encode(model, tokenizer, texts, pooling, max_length=max_length, **encode_kwargs), labels)
