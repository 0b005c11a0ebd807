"""A hand-written LLaMA 3.2 that loads Hugging Face checkpoints, and the tagger built on it. Imports no other room.

config.py     LlamaConfig and the shapes of known checkpoints      rope.py       rotary positions
attention.py  grouped-query attention, causal or not by an explicit flag
padding_free.py  the blocks run on the real tokens only (RealTokens, built on the host); attention on the padded grid
jagged_attention.py  attention on the jagged stack of real tokens, without the grid (CUDA's varlen kernels)
memory_saving.py SiluMul, an autograd function that keeps less for backward, beside its plain formula
llama.py      RMSNorm, SwiGLU, Block, Llama                        tagger.py     backbone + token-classification head
loading.py    fill a Llama from HF safetensors                     tokenizer.py  text <-> ids (tiktoken, sentencepiece)
files.py      atomic file and folder writes, JSON reads and DownloadError, shared by every room
"""

from model.config import LlamaConfig
from model.llama import Llama
from model.loading import load_llama
from model.tokenizer import load_tokenizer

__all__ = ["LlamaConfig", "Llama", "load_llama", "load_tokenizer"]
