"""Stand-ins for tests and benchmarks: a tiny model directory built without torch.

:func:`build_stub_model` writes a model directory in the real format (``manifest.json``, three
ONNX graphs with dynamic batch, ``tokenizer.json``) whose towers are small random linear maps:
the embeddings mean nothing, but every byte of the serving path runs. Needs the ``onnx``
package (the ``train`` extra); serving never imports this module.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from encoders.manifest import Manifest, describe_file, version_from_files
from encoders.preprocess import ImageSpec

_WORDS = [
    "car",
    "coupe",
    "roadster",
    "convertible",
    "racer",
    "sneaker",
    "trainer",
    "runner",
    "boot",
    "shoe",
    "guitar",
    "bass",
    "watch",
    "diver",
    "chronograph",
    "toy",
    "poster",
    "print",
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "new",
    "used",
    "mint",
    "rare",
    "classic",
    "vintage",
    "sport",
    "electric",
    "automatic",
    "leather",
    "edition",
    "model",
    "series",
]


def _tokenizer(path: Path) -> int:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1}
    for word in _WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.save(str(path))
    return len(vocab)


def build_stub_model(
    directory: Path,
    *,
    image_size: int = 32,
    feature_dim: int = 16,
    embedding_dim: int = 32,
    shared_dim: int | None = 8,
    seed: int = 0,
) -> Path:
    """Write a stub model directory at ``directory`` and return it.

    ``shared_dim``: the image and text heads into a shared space (None: a model without them).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab_size = _tokenizer(directory / "tokenizer.json")
    f32 = TensorProto.FLOAT

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    def save(graph: onnx.GraphProto, name: str) -> None:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(directory / name))

    pool = 4  # average-pool to 4x4 so the image tower sees layout, not only colour
    save(
        helper.make_graph(
            [
                helper.make_node(
                    "AveragePool",
                    ["pixels"],
                    ["p"],
                    kernel_shape=[image_size // pool] * 2,
                    strides=[image_size // pool] * 2,
                ),
                helper.make_node("Flatten", ["p"], ["f"], axis=1),
                helper.make_node("MatMul", ["f", "w"], ["features"]),
            ],
            "image",
            [helper.make_tensor_value_info("pixels", f32, ["n", 3, image_size, image_size])],
            [helper.make_tensor_value_info("features", f32, ["n", feature_dim])],
            [weight("w", 3 * pool * pool, feature_dim)],
        ),
        "image.onnx",
    )
    save(
        helper.make_graph(
            [
                helper.make_node("Gather", ["table", "input_ids"], ["e"]),
                helper.make_node("Cast", ["attention_mask"], ["m"], to=f32),
                helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
                helper.make_node("Mul", ["e", "m3"], ["em"]),
                helper.make_node("ReduceSum", ["em", "axis1"], ["s"], keepdims=0),
                helper.make_node("ReduceSum", ["m3", "axis1"], ["c"], keepdims=0),
                helper.make_node("Max", ["c", "one"], ["c1"]),
                helper.make_node("Div", ["s", "c1"], ["features"]),
            ],
            "text",
            [
                helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n", "t"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["n", "t"]),
            ],
            [helper.make_tensor_value_info("features", f32, ["n", feature_dim])],
            [
                weight("table", vocab_size, feature_dim),
                numpy_helper.from_array(np.array([2], np.int64), "axis2"),
                numpy_helper.from_array(np.array([1], np.int64), "axis1"),
                numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            ],
        ),
        "text.onnx",
    )
    save(
        helper.make_graph(
            [
                helper.make_node("Concat", ["image_features", "text_features"], ["x"], axis=1),
                helper.make_node("MatMul", ["x", "w"], ["y"]),
                helper.make_node("LpNormalization", ["y"], ["embedding"], axis=1, p=2),
                helper.make_node("MatMul", ["x", "v"], ["z"]),
                helper.make_node("Sigmoid", ["z"], ["zs"]),
                helper.make_node("Flatten", ["zs"], ["zf"], axis=0),
                helper.make_node("Squeeze", ["zf", "axis0"], ["mismatch"]),
            ],
            "fusion",
            [
                helper.make_tensor_value_info("image_features", f32, ["n", feature_dim]),
                helper.make_tensor_value_info("text_features", f32, ["n", feature_dim]),
            ],
            [
                helper.make_tensor_value_info("embedding", f32, ["n", embedding_dim]),
                helper.make_tensor_value_info("mismatch", f32, ["n"]),
            ],
            [
                weight("w", 2 * feature_dim, embedding_dim),
                numpy_helper.from_array(
                    (rng.standard_normal((2 * feature_dim, 1)) * 0.05).astype(np.float32), "v"
                ),
                numpy_helper.from_array(np.array([0], np.int64), "axis0"),
            ],
        ),
        "fusion.onnx",
    )
    graphs = [
        ("image", "image.onnx"),
        ("text", "text.onnx"),
        ("fusion", "fusion.onnx"),
        ("tokenizer", "tokenizer.json"),
    ]
    shared_space: dict[str, object] = {}
    if shared_dim is not None:
        for side in ("image", "text"):
            save(
                helper.make_graph(
                    [
                        helper.make_node("MatMul", [f"{side}_features", "w"], ["y"]),
                        helper.make_node("LpNormalization", ["y"], ["shared"], axis=1, p=2),
                    ],
                    f"{side}_projection",
                    [helper.make_tensor_value_info(f"{side}_features", f32, ["n", feature_dim])],
                    [helper.make_tensor_value_info("shared", f32, ["n", shared_dim])],
                    [weight("w", feature_dim, shared_dim)],
                ),
                f"{side}_projection.onnx",
            )
            graphs.append((f"{side}_projection", f"{side}_projection.onnx"))
        shared_space = {"dim": shared_dim, "image": "image_projection", "text": "text_projection"}
    files = {role: describe_file(directory, name) for role, name in graphs}
    Manifest(
        model_version=version_from_files("stub", files),
        profile="stub",
        embedding_dim=embedding_dim,
        image_feature_dim=feature_dim,
        text_feature_dim=feature_dim,
        image=ImageSpec(size=image_size, resize=image_size + image_size // 8),
        max_title_tokens=24,
        opset=17,
        files=files,
        created_at=datetime.now(UTC).isoformat(),
        architecture={"stub": json.dumps({"feature_dim": feature_dim})},
        shared_space=shared_space,
    ).write(directory)
    return directory
