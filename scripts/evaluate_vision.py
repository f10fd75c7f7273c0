"""Evaluate a pretrained image backbone on frozen features: weighted kNN and a linear probe.

    python scripts/evaluate_vision.py outputs/vision/simclr/final                      # on the built-in digits
    python scripts/evaluate_vision.py MODEL_DIR --data ../shared/data/cifar10_jpg/cifar10-images.tar.gz
    python scripts/evaluate_vision.py MODEL_DIR --data my_images/ --k 20 --probe-epochs 0

MODEL_DIR is a folder written by scripts/pretrain_vision.py (final/, best/ or a
checkpoint's model/). Images are read at the backbone's own size and channels;
the training split votes (kNN) and trains the probe, the test split (or a
held-out part) is scored. Prints a line of settings, then one JSON object:
knn_accuracy and linear_probe_accuracy (x100), k, temperature, images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from nlpssl.data.augment import to_float
from nlpssl.data.images import load_image_splits
from nlpssl.errors import UserError, exit_on_user_error
from nlpssl.evaluation.vision import frozen_evaluation
from nlpssl.models.vision import load_backbone


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a backbone folder written by scripts/pretrain_vision.py")
    parser.add_argument("--data", default="digits", help="digits, an image folder, or a .tar(.gz) with train/ and test/")
    parser.add_argument("--k", type=int, default=200, help="neighbours that vote (200, as vision SSL libraries report)")
    parser.add_argument("--temperature", type=float, default=0.1, help="vote weight exp(cos / T)")
    parser.add_argument("--probe-epochs", type=int, default=100, help="linear probe epochs (0: kNN only)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held out when the data has no test split")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cache-dir", default=None)
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str]) -> None:
    args = parse_args(argv)
    backbone, spec = load_backbone(args.model_dir)
    splits = load_image_splits(args.data, spec.image_size, spec.channels, args.cache_dir, test_fraction=args.test_fraction)
    if splits["train"].labels is None or "test" not in splits:
        raise UserError(f"{args.data} has no class labels (root/<class>/images) or no test split: kNN and the probe need both")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.to(device)
    started = time.perf_counter()
    with torch.no_grad():
        results = frozen_evaluation(
            lambda images: backbone(to_float(images, spec.mean, spec.std)), splits["train"], splits["test"], device,
            args.batch_size, args.k, args.temperature, args.probe_epochs,
        )
    print(f"{args.model_dir} on {args.data}: {len(splits['train']):,} train / {len(splits['test']):,} test images, "
          f"{spec.architecture}, {time.perf_counter() - started:.0f}s")
    print(json.dumps({**{key: round(value, 2) for key, value in results.items()}, "k": args.k,
                      "temperature": args.temperature, "train_images": len(splits["train"]), "test_images": len(splits["test"])}))


if __name__ == "__main__":
    main(sys.argv[1:])
