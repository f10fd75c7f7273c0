"""The long-text similarity check: WikiText articles as paragraph groups, same-article retrieval scores."""

import pytest
import torch

from nlpssl.data.documents import heading_level, read_wikitext_articles
from nlpssl.errors import UserError
from nlpssl.evaluation.long_text import paragraph_groups, retrieval_scores

WIKITEXT = """ 
 = Alpha = 
 
 alpha one {long} 
 = = History = = 
 alpha two {long} 
 short line 
 = Beta = 
 beta one {long} 
 = = = Deep = = = 
 beta two {long} 
 beta three {long} 
 = Gamma = 
 gamma only {long} 
""".format(long="word " * 12)


def test_articles_are_split_at_titles_not_sections_and_short_paragraphs_dropped(tmp_path):
    path = tmp_path / "wiki.valid.tokens"
    path.write_text(WIKITEXT)
    articles = read_wikitext_articles(path, min_words=10)
    assert [[p.split()[:2] for p in a] for a in articles] == [
        [["alpha", "one"], ["alpha", "two"]], [["beta", "one"], ["beta", "two"], ["beta", "three"]], [["gamma", "only"]],
    ]
    assert (heading_level(" = Alpha = "), heading_level(" = = History = = "), heading_level(" a = b = c ")) == (1, 2, 0)
    texts, labels = paragraph_groups(articles, per_article=2)
    assert labels == [0, 0, 1, 1]  # Gamma has one paragraph: nothing to find; Beta keeps two
    assert texts[2].startswith("beta one")


def test_retrieval_scores_rank_the_nearest_paragraph_of_the_same_article():
    perfect = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert retrieval_scores(perfect, [0, 0, 1, 1]) == {"mrr": 100.0, "recall_at_1": 100.0}
    # paragraph 0's nearest other is paragraph 2 (another article); its own article's comes second
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.95, 0.05], [0.05, 0.95]])
    scores = retrieval_scores(mixed, [0, 0, 1, 1])
    assert scores["recall_at_1"] == 0.0
    assert scores["mrr"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 2 + 1 / 3) / 4)


def test_missing_wikitext_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_wikitext_articles(tmp_path / "wiki.valid.tokens")
