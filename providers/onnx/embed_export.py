"""``python -m minigate.providers.onnx.embed_export HF_FOLDER OUT.onnx``: a transformers encoder to ONNX.

Run in a child process by :mod:`minigate.providers.onnx.embed_pull`, so torch and transformers never stay loaded in
the process that pulls. The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (batch and
sequence axes dynamic) and gives ``last_hidden_state``; pooling is the runtime's (:mod:`.embed_model`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["export_encoder"]


def export_encoder(hf_dir: Path, out: Path) -> None:
    """Export the encoder of ``hf_dir`` (a BERT-like transformers model) to ``out`` (fp32, opset 17)."""
    import torch
    from transformers import AutoModel

    # Eager attention: the traced graph then holds the padding mask as plain arithmetic, for every batch shape.
    model = AutoModel.from_pretrained(str(hf_dir), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(
            Encoder(model),
            (ids, mask, torch.zeros_like(ids)),
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # the tracer's warnings are about code paths the export does not take
    export_encoder(Path(sys.argv[1]), Path(sys.argv[2]))
