"""A tiny random-weight chat model for fast tests of the onnxruntime-genai provider.

It is a real onnxruntime-genai model folder (about 1M parameters, Llama architecture) with a byte-level BPE
tokenizer trained on the standard library's own source text, ChatML special tokens and a ChatML chat
template, built by the onnxruntime-genai model builder. Its output is gibberish, but it is deterministic
under greedy search, so tests can compare token counts, stop strings and lengths exactly.

Building needs the conversion tools (torch, transformers, tokenizers, onnx, onnx_ir, safetensors) and takes
about 5 s; the result is cached under the caller's directory, keyed by this file's content.

Run ``python -m tests.providers.onnx.tinymodel DIR`` to build it by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "build_tiny_model", "tiny_model_dir"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 1024
MODEL_NAME = "tiny-chat"


def _cache_key(precision: str) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(precision.encode())
    return digest.hexdigest()[:12]


def tiny_model_dir(cache_dir: str | os.PathLike[str], precision: str = "fp32") -> Path:
    """Where the tiny model for this version of the file lives under ``cache_dir`` (built or not)."""
    return Path(cache_dir) / f"{MODEL_NAME}-{precision}-{_cache_key(precision)}"


def _training_text(limit: int = 2_000_000) -> list[str]:
    """Local text to train the tokenizer on: the standard library's Python sources (about 2 MB of them)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text)
        total += len(text)
        if total >= limit:
            break
    return texts


def _write_tokenizer(hf_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    tok.save(str(hf_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "model_max_length": 2048,
        "add_prefix_space": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t in SPECIAL_TOKENS
        },
    }
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (hf_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def _printable(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable() and text not in SPECIAL_TOKENS


def _write_model(hf_dir: Path) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    eos = tok.token_to_id("<|im_end|>")
    bos = tok.token_to_id("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=bos,
        tie_word_embeddings=False,
        initializer_range=0.1,  # wide enough weights that greedy output varies instead of looping
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config)
    # Only printable ASCII tokens can win: zero the output rows of the rest (special tokens, EOS included,
    # and stray bytes), so output is readable and greedy search always runs to max_tokens.
    printable = [i for i in range(VOCAB_SIZE) if i != eos and _printable(tok.decode([i]))]
    mask = torch.zeros(VOCAB_SIZE, 1)
    mask[printable] = 1.0
    with torch.no_grad():
        model.lm_head.weight.mul_(mask)
    model.save_pretrained(hf_dir)
    GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=bos).save_pretrained(hf_dir)


def build_tiny_model(cache_dir: str | os.PathLike[str], precision: str = "fp32") -> Path:
    """Build the tiny model under ``cache_dir`` unless it is there already; return its folder.

    The folder is written under a temporary name and renamed into place, so a half-built model is never
    picked up and concurrent builders do not trip over each other.
    """
    out = tiny_model_dir(cache_dir, precision)
    if (out / "genai_config.json").is_file():
        return out
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".tiny-build-") as tmp:
        hf_dir = Path(tmp) / "hf"
        hf_dir.mkdir()
        _write_tokenizer(hf_dir)
        _write_model(hf_dir)
        onnx_dir = Path(tmp) / "onnx"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o"]
        cmd += [str(onnx_dir), "-p", precision, "-e", "cpu", "-c", str(Path(tmp) / "cache")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not (onnx_dir / "genai_config.json").is_file():
            raise RuntimeError(f"model builder failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        try:
            onnx_dir.rename(out)
        except OSError:
            if not (out / "genai_config.json").is_file():  # not a concurrent builder that won the race
                raise
    return out


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/minigate-test")
    print(build_tiny_model(target))
