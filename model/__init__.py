"""A hand-written LLaMA 3.2 that loads Hugging Face checkpoints."""

from model.config import LlamaConfig
from model.llama import Llama
from model.loading import load_llama
from model.tokenizer import load_tokenizer

__all__ = ["LlamaConfig", "Llama", "load_llama", "load_tokenizer"]
