"""Text generated from a fixed prompt, as an evaluator for the training loop.

Reading a sample at each evaluation shows what perplexity hides (repetition,
broken words). Sampling runs on a forked RNG, so it never changes the training
run's random stream and a resumed run stays identical.
"""

from __future__ import annotations

import torch

from nlpssl.evaluation.evaluator import Evaluator
from nlpssl.objectives.base import Objective


class TextSample(Evaluator):
    """Evaluator: continue ``prompt`` for ``max_new_tokens`` tokens; returns ``{"sample": text}``.

    Args:
        tokenizer: the tokenizer the model was trained with.
        prompt: the fixed start of every sample.
        max_new_tokens: how many tokens to add.
        top_k: 0 for greedy decoding; else sample among the ``top_k`` most likely
            tokens with a fixed ``seed`` (the same draw at every evaluation).

    The objective must hold its causal-LM model as ``objective.model``.

    Example::

        sample = TextSample(tokenizer, "In the beginning", max_new_tokens=40, top_k=40)
        train(CausalLM(model), blocks, CausalLMCollator(tokenizer), cfg, evaluators=[sample])
    """

    def __init__(self, tokenizer, prompt: str, max_new_tokens: int = 40, top_k: int = 0, seed: int = 0) -> None:
        self.tokenizer, self.prompt, self.max_new_tokens = tokenizer, prompt, max_new_tokens
        self.top_k, self.seed = top_k, seed

    def __call__(self, objective: Objective) -> dict[str, str]:
        return {"sample": self.generate(objective.model)}

    @torch.no_grad()
    def generate(self, model) -> str:
        """The prompt and its continuation by ``model``, special tokens removed."""
        encoded = self.tokenizer(self.prompt, return_tensors="pt").to(model.device)
        was_training = model.training
        model.eval()
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            ids = model.generate(
                **encoded,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.top_k > 0,
                top_k=self.top_k if self.top_k > 0 else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )  # (1, prompt + new)
        model.train(was_training)
        return self.tokenizer.decode(ids[0], skip_special_tokens=True)
