"""The encoder commands, end to end on a tiny marketplace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from encoders import cli
from encoders.runtime import Encoder


def _run(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="vitrine")
    sub = parser.add_subparsers(dest="command")
    cli.add_commands(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.mark.parametrize("argv", [["synth"], ["train"], ["model", "build"], ["model", "info"]])
def test_help_texts(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        _run(*argv, "--help")
    assert info.value.code == 0
    assert "usage: vitrine" in capsys.readouterr().out


def test_model_info_verifies_and_prints(tiny_model, capsys) -> None:
    assert _run("model", "info", str(tiny_model.directory)) == 0
    out = capsys.readouterr().out
    assert "checksums OK" in out and "untrained" in out
    assert _run("model", "info", str(tiny_model.directory), "--json") == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "tiny"


def test_synth_train_build_serve(tmp_path: Path, tiny_bert_dir: Path, capsys) -> None:
    data, run, model = tmp_path / "data", tmp_path / "run", tmp_path / "model"
    assert _run("synth", "--out", str(data), "--listings", "160", "--image-size", "72") == 0
    common = ["--profile", "tiny", "--epochs", "1", "--batch-size", "8",
              "--text-model", str(tiny_bert_dir), "--no-cache"]  # fmt: skip
    assert _run("train", "--data", str(data), "--out", str(run), *common) == 0
    report = json.loads((run / "report.json").read_text())
    assert set(report["evaluation"]["recall_at_10"]) == {
        "multimodal", "text_only", "image_only", "image_features", "text_shared"
    }  # fmt: skip
    auc = report["evaluation"]["mismatch_roc_auc"]
    assert set(auc) == {"other_category", "same_category", "labelled"}
    assert all(0.0 <= v <= 1.0 for v in auc.values())
    assert "mismatch ROC-AUC" in (run / "report.txt").read_text()
    assert (
        _run("model", "build", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(model)) == 0
    )
    encoder = Encoder.load(model)
    assert encoder.manifest.training["trained"] is True
    assert "evaluation" in encoder.manifest.training
    assert "written to" in capsys.readouterr().out
    # Served with ONNX Runtime, the held-out figures are those training reported.
    assert _run("evaluate", "--model", str(model), "--data", str(data)) == 0
    out = capsys.readouterr().out
    assert "mismatch ROC-AUC" in out and "image->title top-1" in out
    served = json.loads((model / "evaluation.json").read_text())["evaluation"]
    assert served["test_listings"] == report["evaluation"]["test_listings"]
    for kind, value in report["evaluation"]["mismatch_roc_auc"].items():
        assert served["mismatch_roc_auc"][kind] == pytest.approx(value, abs=1e-3)
    for name, value in report["evaluation"]["recall_at_10"].items():
        assert served["recall_at_10"][name] == pytest.approx(value, abs=1e-3)
