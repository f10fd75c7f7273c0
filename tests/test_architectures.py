"""model.architecture: BERT, ModernBERT and RoBERTa-PreLayerNorm encoders built from dimensions, each
trained by MaskedLM (sparse head), exported, and loaded by the tools downstream of pretraining."""

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, pipeline

from nlpssl.data.collators import MLMCollator
from nlpssl.errors import UserError
from nlpssl.models.text import ENCODERS, build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from tests.helpers import TINY_DIMS, tiny_blocks


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(30)


@pytest.fixture(scope="module", params=sorted(ENCODERS))
def exported(request, setup, tmp_path_factory):
    """(architecture, folder) of a model trained two steps with whole-word masking and exported with its tokenizer."""
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS, architecture=request.param))
    collator = MLMCollator(tokenizer, whole_word_mask=True)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    for step in range(2):
        objective(collator([blocks[i] for i in range(4 * step, 4 * step + 4)]))["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp(request.param)
    objective.export(folder)
    tokenizer.save_pretrained(folder)
    return request.param, folder, objective


def test_sparse_head_matches_the_models_own_logits(exported, setup):
    tokenizer, blocks = setup
    _, _, objective = exported
    objective.eval()
    batch = MLMCollator(tokenizer)([blocks[i] for i in range(4)], generator=torch.Generator().manual_seed(0))
    sparse = objective(batch)["loss"]
    dense = torch.nn.functional.cross_entropy(
        objective.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.flatten(0, 1),
        batch["labels"].flatten(),
    )
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-5)


def test_export_loads_with_auto_classes_and_fill_mask(exported):
    architecture, folder, _ = exported
    model = AutoModelForMaskedLM.from_pretrained(folder)
    assert model.config.model_type == architecture
    predictions = pipeline("fill-mask", model=str(folder))("and god said let there be [MASK]")
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)


def test_export_fine_tunes_as_a_classifier_and_encodes_sentence_pairs(exported, setup):
    tokenizer, _ = setup
    _, folder, _ = exported
    pairs = tokenizer(["and god said", "let there be light"], ["in the beginning", "and there was light"], return_tensors="pt", padding=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    loss = classifier(**pairs, labels=torch.tensor([0, 2])).loss
    loss.backward()
    assert torch.isfinite(loss)
    hidden = AutoModel.from_pretrained(folder)(**pairs).last_hidden_state  # what SimCSE pools
    assert hidden.shape[:2] == pairs["input_ids"].shape


def test_unknown_architecture_lists_the_known_ones(setup):
    tokenizer, _ = setup
    with pytest.raises(UserError, match="model.architecture=gpt5 is not known; choose one of bert, modernbert, roberta-prelayernorm"):
        build_mlm_model(tokenizer, TINY_DIMS, architecture="gpt5")


def test_checkpoint_of_another_architecture_is_refused(exported, setup):
    tokenizer, _ = setup
    architecture, folder, _ = exported
    other = next(name for name in ENCODERS if name != architecture)
    with pytest.raises(UserError, match=f"is a {architecture} model but model.architecture={other}"):
        build_mlm_model(tokenizer, checkpoint=str(folder), architecture=other)
    assert build_mlm_model(tokenizer, checkpoint=str(folder), architecture=architecture).config.model_type == architecture
