"""Documents as lists of paragraphs, for long-text similarity checks: WikiText's articles.

WikiText files hold one paragraph per line, articles headed ``= Title =`` and
sections ``= = Section = =``.
"""

from __future__ import annotations

from pathlib import Path

from nlpssl.errors import UserError



def heading_level(line: str) -> int:
    """1 for an article title ``= Title =``, 2 for ``= = Section = =``, ...; 0 for a paragraph."""
    words = line.split()
    if len(words) < 3 or words[0] != "=" or words[-1] != "=":
        return 0
    return next(i for i, word in enumerate(words) if word != "=")


def read_wikitext_articles(path: str | Path, min_words: int = 40) -> list[list[str]]:
    """Each article's paragraphs (of at least ``min_words`` words), in file order; articles without any are dropped.

    Example::

        articles = read_wikitext_articles("../shared/data/wikitext2/wiki.valid.tokens")   # [[p1, p2, ...], ...]
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"WikiText file {path} not found; pass the folder holding wiki.valid.tokens and wiki.test.tokens")
    articles: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        level = heading_level(line)
        if level == 1:
            articles.append([])
        elif not level and articles and len(line.split()) >= min_words:
            articles[-1].append(line.strip())
    return [paragraphs for paragraphs in articles if paragraphs]
