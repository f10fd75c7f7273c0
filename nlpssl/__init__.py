"""nlpssl: self-supervised pretraining for text and images, on Hugging Face Accelerate."""

from nlpssl._torchvision import ensure_torchvision_importable

# A CUDA torchvision wheel beside a CPU torch would otherwise break every
# transformers model import (transformers imports torchvision when installed).
ensure_torchvision_importable()

__version__ = "0.1.0"
