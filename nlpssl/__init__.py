"""nlpssl: self-supervised pretraining for NLP, on Hugging Face Accelerate."""

__version__ = "0.1.0"
