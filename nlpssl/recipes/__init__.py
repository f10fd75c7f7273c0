"""Recipes: the config sections each script reads and the wiring scripts share.

Only scripts see these dataclasses; library functions take plain arguments.
Each recipe is a dataclass of sections, read with :func:`nlpssl.config.load_config`.

* :mod:`nlpssl.recipes.common`: output paths, checkpoint names (``minilm``).
* :mod:`nlpssl.recipes.pretrain`: masked and causal LM (corpus, tokenizer, model, masking).
* :mod:`nlpssl.recipes.simcse`: contrastive sentence embeddings.
* :mod:`nlpssl.recipes.classification`: fine-tuning for sequence classification and regression.
"""
