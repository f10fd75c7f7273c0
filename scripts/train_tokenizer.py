"""Train a WordPiece (BERT) or byte-level BPE (GPT-2) tokenizer on a corpus.

    python scripts/train_tokenizer.py --data.corpus=my_corpus.txt --tokenizer.vocab_size=16000 --output.dir=tok/

The folder it writes loads with AutoTokenizer.from_pretrained, and pretraining
scripts take it with --tokenizer.path=tok/.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from nlpssl.config import load_config
from nlpssl.data.corpus import load_corpus
from nlpssl.data.tokenizer import train_tokenizer
from nlpssl.errors import exit_on_user_error
from nlpssl.recipes.pretrain import DataConfig, TokenizerConfig


@dataclass
class OutputConfig:
    dir: str = "outputs/tokenizer"


@dataclass
class TokenizerRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(TokenizerRecipe, argv)
    corpus = load_corpus(cfg.data.corpus, cfg.data.text_column, cfg.data.txt_mode, cfg.data.skip_invalid_utf8)
    tok = cfg.tokenizer
    tokenizer = train_tokenizer(corpus["text"], tok.kind, tok.vocab_size, tok.lowercase, tok.min_frequency)
    tokenizer.save_pretrained(cfg.output.dir)
    print(f"nlpssl: {tok.kind} tokenizer with {len(tokenizer):,} tokens saved to {cfg.output.dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
