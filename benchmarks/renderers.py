"""README table cells from the benchmarks' JSON lines: one renderer per benchmark.

A renderer takes a benchmark's JSON result (the dict its last stdout line
holds) and returns table rows without the command: a list of ``(what, result)``
cell pairs, usually one. Figures come only from the result, so the README says
what ``benchmarks/results.json`` says. ``generic`` serves a benchmark that has
no renderer of its own yet (and any whose JSON no longer fits its renderer).
"""

from __future__ import annotations

Cells = list[tuple[str, str]]


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def spread(summary: dict) -> str:
    """``mean ± std`` of a :func:`common.mean_std` summary."""
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}"


def signed_spread(summary: dict) -> str:
    return f"{summary['mean']:+.2f} ± {summary['std']:.2f}"


def points(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def mlm_throughput(result: dict) -> Cells:
    """One table row per model row; the headline row's ratio in bold."""
    cells = []
    for name, row in result["rows"].items():
        headline = name == result.get("headline")
        model = (f"{row['architecture']} {row['hidden_size']}/{row['num_layers']} layers/{row['num_heads']} heads/"
                 f"FFN {row['intermediate_size']}, vocab {row['vocab_size']:,}")
        what = (f"MLM training step (collate + forward + backward + clip + AdamW), nlpssl (MLMCollator + sparse head) vs "
                f"DataCollatorForLanguageModeling + the same model with its full head, same batches, fused AdamW on both "
                f"sides; row `{name}`{' (the default recipe, configs/mlm.yaml)' if name == 'recipe' else ''}: {model}, "
                f"{row['corpus']}, {row['batch_size']} x {row['block_size']}")
        figure = f"**{ratio(row['ratio'])}**" if headline else ratio(row["ratio"])
        cells.append((what, f"{figure} tokens/s ({rate(row['nlpssl_tokens_per_s'])} vs {rate(row['hf_tokens_per_s'])}); "
                            f"collator alone {ratio(row['collator_ratio'])}"))
    return cells


def clm_throughput(result: dict) -> Cells:
    what = (f"causal-LM step vs DataCollatorForLanguageModeling(mlm=False) + GPT2LMHeadModel, same batches, fused AdamW "
            f"on both sides; hidden 256, 4 layers, BPE 8,000, {result.get('batch_size', 16)} x 128")
    return [(what, f"**{ratio(result['ratio'])}** tokens/s ({rate(result['nlpssl_tokens_per_s'])} vs "
                   f"{rate(result['hf_tokens_per_s'])}); collator alone {ratio(result['collator_ratio'])}")]


def simcse_throughput(result: dict) -> Cells:
    shape = f"MiniLM, batch {result.get('batch_size', 64)}, {result.get('max_length', 32)} tokens, fused AdamW on both sides"
    reference = rate(result["sentence_transformers_sentences_per_s"])
    return [
        (f"unsupervised SimCSE step vs sentence-transformers' MultipleNegativesRankingLoss step on the same batches; {shape}",
         f"**{ratio(result['ratio'])}** sentences/s ({rate(result['nlpssl_sentences_per_s'])} vs {reference})"),
        (f"the same, nlpssl with its recipe's length-grouped batches (other sentences, less padding) vs the random batches; {shape}",
         f"{ratio(result['ratio_grouped'])} sentences/s ({rate(result['nlpssl_grouped_sentences_per_s'])} vs {reference})"),
    ]


def simcse_grouping(result: dict) -> Cells:
    seeds = len(result["seeds"])
    what = (f"does length grouping change what unsupervised SimCSE learns? The SimCSE recipe from MiniLM for "
            f"{result['steps']} steps with `train.group_by_length` true or false, STS-B dev after the last step, "
            f"{seeds} seed{'s' if seeds > 1 else ''}")
    return [(what, f"STS-B dev grouped {spread(result['grouped'])}, random {spread(result['random'])}: difference "
                   f"**{signed_spread(result['difference'])}** (paired by seed); MiniLM before training "
                   f"{points(result['start_stsb_dev'])}")]


def simcse_general(result: dict) -> Cells:
    what = ("the default unsupervised SimCSE recipe from MiniLM, and variants of it: STS12-16, STS-B test, SICK-R (their "
            "mean: avg) and long-text paragraph retrieval, before and after; goal: avg rises and no task loses more than 1 point")
    start = result["start"]
    variants = "; ".join(
        f"{name} avg {v['change']['avg']:+.2f}, worst task {v['worst_change']:+.2f}"
        f"{' (goal met)' if v['meets_goal'] else ''}" if "avg" in v["change"] else
        f"{name} worst task {v['worst_change']:+.2f}"
        for name, v in result["variants"].items()
    )
    return [(what, f"start avg {points(start.get('avg'))}; {variants}")]


def finetune_sst2(result: dict) -> Cells:
    sides, seeds = result["sides"], len(result["seeds"])
    setup = (f"MiniLM fine-tuned on {result['train_examples']:,} SST-2 sentences, {result['steps']} steps of "
             f"{result['batch_size']}, same hyperparameters; best of {result['epochs']} per-epoch evaluations on "
             f"{result['validation_examples']:,} sentences held out of train, accuracy on SST-2 dev (872, nothing "
             f"selected on it), {seeds} seed{'s' if seeds > 1 else ''}")

    def accuracy(name: str) -> str:
        return spread(sides[name]["dev_accuracy"])

    return [
        (f"{setup}: nlpssl vs the Trainer with `group_by_length` and DataCollatorWithPadding (the reference)",
         f"**{ratio(result['ratio'])}** examples/s ({rate(sides['nlpssl']['examples_per_s'])} vs "
         f"{rate(sides[result['reference']]['examples_per_s'])}); dev accuracy {accuracy('nlpssl')} vs "
         f"{accuracy(result['reference'])}"),
        ("context: the same vs the Trainer as the text-classification example runs it (padding to 128, random batches)",
         f"{ratio(result['ratio_vs_hf_glue'])} examples/s (vs {rate(sides['hf_glue']['examples_per_s'])}); "
         f"dev accuracy {accuracy('hf_glue')}"),
    ]


def pretraining_pays(result: dict) -> Cells:
    runs = result["sst2_dev_accuracy"]
    sizes = " / ".join(f"{run['train_examples']:,}" for run in runs)
    mlm = f"configs/mlm_wikitext2.yaml, {result['mlm_steps']:,} steps" if result.get("mlm_steps") else f"`{result.get('mlm_dir')}`"
    if result.get("mlm_final_loss") is not None:
        mlm += f", final MLM loss {result['mlm_final_loss']:.2f}"
    pooling = f" ({result['pooling']} pooling)" if result.get("pooling") else ""
    what = (f"small encoder MLM-pretrained with nlpssl on WikiText-2 ({mlm}) vs the same architecture randomly "
            f"initialised, fine-tuned alike on SST-2 subsets{pooling}, selected on a split held out of train, "
            f"{len(result['seeds'])} seed(s)")
    return [(what, f"SST-2 dev accuracy with {sizes} sentences: pretrained "
                   f"{' / '.join(spread(run['pretrained']) for run in runs)}, random "
                   f"{' / '.join(spread(run['random_init']) for run in runs)}: margin "
                   f"**{' / '.join(signed_spread(run['margin']) for run in runs)}** points")]


def simcse_quality(result: dict) -> Cells:
    loss = f", final MLM loss {result['mlm_final_loss']:.2f}" if result.get("mlm_final_loss") is not None else ""
    what = (f"WikiText-2 MLM model ({result.get('mlm_steps') or 'given'} steps{loss}), then unsupervised SimCSE on WikiText-2 "
            f"sentences ({result['simcse_steps']} steps, best on STS-B dev); controls: the architecture untrained, and "
            f"supervised SimCSE on SNLI dev+test triples ({result['sup_steps']} steps); STS-B test and the STS average")
    supervised = ""
    if "sup_stsb_test_gain" in result:
        supervised = f"; supervised **{result['sup_stsb_test_gain']:+.2f}** ({points(result['sup_simcse_stsb_test'])})"
    return [(what, f"STS-B test {points(result['mlm_stsb_test'])} before, {points(result['simcse_stsb_test'])} after "
                   f"unsupervised SimCSE (**{result['stsb_test_gain']:+.2f}**); untrained "
                   f"{points(result['random_init_stsb_test'])}{supervised}; STS avg {points(result['mlm_avg'])} -> "
                   f"{points(result['simcse_avg'])}; MiniLM {points(result['minilm_stsb_test'])} / "
                   f"{points(result['minilm_avg'])}")]


def vision_throughput(result: dict) -> Cells:
    what = (f"SimCLR training step vs lightly's documented pipeline (per-image transforms in a {result['workers']}-worker "
            f"DataLoader), the same ResNet-18 (width {result['width']}), NT-Xent and optimizer; batch "
            f"{result['batch_size']} x 2 views, {result['image_size']} px, {result['torch_threads']} torch threads")
    return [(what, f"**{ratio(result['ratio'])}** images/s ({rate(result['nlpssl_images_per_s'])} vs "
                   f"{rate(result['lightly_images_per_s'])}); augmentation alone {ratio(result['augment_ratio'])}")]


def vision_knn(result: dict) -> Cells:
    what = (f"each method for the same budget: {result['steps']} steps x {result['batch_size']} images of a seeded "
            f"{result['train_images']:,}-image CIFAR-10 train subset, ResNet-18 width {result['width']} (MAE: a ViT); "
            f"kNN (k={result['knn_k']}) of frozen features on {result['test_images']:,} test images; seeds {result['seeds']}")
    untrained_spread = f" ± {result['random_init_std']:.2f}" if result.get("random_init_std") is not None else ""
    untrained = f"untrained ResNet {points(result['random_init'])}{untrained_spread}"
    if result.get("random_init_vit") is not None:
        untrained += f", untrained ViT {points(result['random_init_vit'])}"

    def cell(name: str, value: float) -> str:
        own_vit = name == "mae" and result.get("random_init_vit") is not None  # MAE against its untrained ViT
        baseline = result["random_init_vit"] if own_vit else result["random_init"]
        spread = f" ± {result['knn_std'][name]:.2f}" if name in result.get("knn_std", {}) else ""
        verdict = "" if result["beats_random"].get(name, True) else ", **not above untrained**"
        return f"{name} {value:.2f}{spread} ({value - baseline:+.2f}{verdict})"

    methods = ", ".join(cell(name, value) for name, value in sorted(result["knn"].items(), key=lambda item: -item[1]))
    versus = result.get("simclr_beats_lightly")
    lightly = "" if versus is None else f"; nlpssl SimCLR above lightly's: {'yes' if versus else '**no**'}"
    return [(what, f"kNN %: {untrained}; {methods}{lightly}")]


def vision_variants(result: dict) -> Cells:
    what = (f"recipe variants at vision_knn's budget ({result['steps']} steps x {result['batch_size']} images), scored by "
            f"kNN on {result['val_images']:,} CIFAR-10 train images left out of training (the split recipes are chosen on, "
            f"never test); seeds {result['seeds']}")

    def cell(method: str, name: str, value: float) -> str:
        std = result.get("knn_std", {}).get(method, {}).get(name)
        return f"{name} {value:.2f}" + (f" ± {std:.2f}" if std is not None else "")

    figures = "; ".join(
        f"{method}: " + ", ".join(cell(method, name, value) for name, value in named.items())
        for method, named in result["knn"].items()
    )
    return [(what, f"kNN %: {figures}")]


def mlm_budget(result: dict) -> Cells:
    variants = sorted(result["variants"].items(), key=lambda item: -item[1]["top1"])
    causal = result.get("objective") == "clm"
    what = (f"{'causal' if causal else 'masked'}-LM recipe changes on one budget ({result['tokens_per_run']:,} training tokens per run): "
            f"{'next' if causal else 'masked'}-token top-1 accuracy on held-out bible-web")
    figures = ", ".join(f"{name} {top1_text(v)}" for name, v in variants)
    baseline = variants[0][1]["baseline_top1"] if variants else None
    return [(what, f"top-1 %: {figures}; context-free baseline {points(baseline)}")]


def top1_text(variant: dict) -> str:
    """A recipe variant's top-1 %, with its std over seeds when there were several."""
    std = variant.get("top1_std")
    return f"{variant['top1']:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def mlm_budget_study(result: dict) -> str:
    """The recipe study's table: one row per variant, in the order they ran, the best top-1 in bold."""
    causal = result.get("objective") == "clm"
    variants = result["variants"]
    best = max(v["top1"] for v in variants.values())
    lines = [f"| run | {'next' if causal else 'masked'}-token top-1 % | top-5 % | context-free baseline top-1 % | "
             "top-1 / baseline | steps |", "|---|---|---|---|---|---|"]
    for name, v in variants.items():
        bold = "**" if v["top1"] == best else ""
        lines.append(f"| `{name}`: {v.get('description', '')} | {bold}{top1_text(v)}{bold} | {v['top5']:.2f} | "
                     f"{v['baseline_top1']:.2f} | {bold}{v['ratio_to_baseline']:.2f}{bold} | {v['steps']} |")
    return "\n".join(lines)


def kill_resume(result: dict) -> Cells:
    what = (f"a tiny MLM run ({result['steps']} steps, a checkpoint every {result['save_every']}) sent SIGKILL "
            f"{result['kills']} times at seeded random moments (start-up, training, checkpoint write, just after one), "
            f"resumed each time, against the same run uninterrupted")

    def yes(flag: bool) -> str:
        return "yes" if flag else "**no**"

    written = result["bytes_written"]
    return [(what, f"**{result['survived']} / {result['kills']}** kills survived; logged records identical: "
                   f"{yes(result['identical_losses'])}, final weights identical: {yes(result['identical_weights'])}; "
                   f"{result['steps_redone']} steps done twice; bytes written "
                   f"{written['killed_and_resumed'] / max(written['uninterrupted'], 1):.1f}x the uninterrupted run's")]


def generic(result: dict) -> Cells:
    """A benchmark without a renderer of its own: its top-level numbers and words."""
    scalars = {key: value for key, value in result.items() if key not in ("benchmark", "quick") and isinstance(value, (int, float, str, bool))}
    figures = ", ".join(f"{key} {value}" for key, value in list(scalars.items())[:10]) or "see results.json"
    return [(f"`{result.get('benchmark', '?')}` (no renderer yet: its JSON line's top-level values)", figures)]
