"""GGUF file -> Hugging Face folder, with transformers (the ``convert`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

from minigate.providers.onnx.progress import Progress

__all__ = ["GENERATION_KEYS", "GGUF_SAMPLING", "fix_tokenizer_config", "gguf_to_hf"]

# The fields of a model's generation_config.json that are its defaults for a request that does not set them.
GENERATION_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")
# A GGUF file carries no sampling defaults. Small models loop on longer answers when decoded greedily without a
# repetition penalty (SmolLM2-135M int4 rambles to the end of the context); 1.1 ends its answers (1.2 loops again).
GGUF_SAMPLING = {"do_sample": False, "repetition_penalty": 1.1}


def gguf_to_hf(gguf_file: Path, hf_dir: Path, progress: Progress) -> Path:
    """Turn a GGUF file into a Hugging Face folder (fp32 weights, tokenizer, chat template).

    transformers marks a model loaded from GGUF as quantized and refuses to save it; copying its state_dict
    into a fresh model of the same config works. The end-of-turn token ``<|im_end|>`` (ChatML) becomes EOS
    when the vocabulary has it, and the tokenizer class is pinned to one onnxruntime-genai knows.
    """
    from minigate.providers.onnx.tools import ConvertError, require_tools

    tools = require_tools(("torch", "transformers", "gguf", "safetensors"))
    torch, transformers = tools["torch"], tools["transformers"]
    folder, name = str(gguf_file.parent), gguf_file.name
    progress.info("loading GGUF with transformers (dequantizing)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # The loaded model says it is GGUF-quantized; the fresh copy is plain fp32, and the builder refuses
    # a config that claims a quantization it does not know.
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if eos_id is not None:
        config.eos_token_id = eos_id
    progress.info("copying weights into a plain model")
    fresh = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ConvertError(f"weights did not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    del loaded
    hf_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(hf_dir)
    gen = transformers.GenerationConfig.from_model_config(config)
    if eos_id is not None:
        gen.eos_token_id = eos_id
    for key, value in GGUF_SAMPLING.items():
        setattr(gen, key, value)
    gen.save_pretrained(hf_dir)
    if eos_id is not None:
        tokenizer.eos_token = "<|im_end|>"
    tokenizer.save_pretrained(hf_dir)
    fix_tokenizer_config(hf_dir)
    return hf_dir


def fix_tokenizer_config(hf_dir: Path) -> None:
    """Pin ``tokenizer_class`` to a class the onnxruntime-genai tokenizer knows (transformers 5 writes
    ``TokenizersBackend``, which it does not)."""
    path = hf_dir / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
        config["tokenizer_class"] = "GPT2Tokenizer"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
