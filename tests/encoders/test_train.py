"""The training recipe: frozen towers by default, optional last-stage fine-tuning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from encoders.synth import SynthConfig, generate
from encoders.train import TrainConfig, load_checkpoint, run_profile, train


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train-data")
    generate(out, SynthConfig(listings=160, seed=5, image_size=72), progress=False)
    return out


def _config(tiny_bert_dir: Path, **overrides: object) -> TrainConfig:
    base = {"profile": "tiny", "epochs": 1, "batch_size": 8, "text_model": str(tiny_bert_dir)}
    return TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]


def _trunk_after(run: Path) -> dict[str, torch.Tensor]:
    towers, _ = load_checkpoint(run / "checkpoint.pt")
    return towers.trunk.state_dict()


def test_frozen_by_default_and_last_stage_fine_tuning(
    synth_data: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    frozen = tmp_path / "frozen"
    train(synth_data, frozen, _config(tiny_bert_dir, seed=1), progress=False)
    tuned = tmp_path / "tuned"
    report = train(
        synth_data, tuned, _config(tiny_bert_dir, seed=1, finetune_last_stage=True),
        progress=False, cache_dir=tmp_path / "cache",
    )  # fmt: skip
    assert report["config"]["finetune_last_stage"] is True
    a, b = _trunk_after(frozen), _trunk_after(tuned)
    # Both runs start from the same random trunk (seeded); only the tuned one moves layer4.
    changed = {k for k in a if a[k].dtype.is_floating_point and not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("layer4.") for k in changed)
    assert list((tmp_path / "cache").glob("image-body-*.npy"))


def test_image_size_override(tiny_bert_dir: Path) -> None:
    profile = run_profile(_config(tiny_bert_dir, image_size=96))
    assert (profile.image_size, profile.resize) == (96, 108)
    assert run_profile(_config(tiny_bert_dir)).image_size == 64


def test_prior_shift_moves_the_trained_base_rate_to_the_prior() -> None:
    from encoders.train import prior_shift

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    # A head trained on half swapped covers says 0.5 where it cannot tell; in a catalogue with
    # 15 % wrong covers the same evidence means 0.15.
    assert sigmoid(0.0 + prior_shift(0.5, 0.15)) == pytest.approx(0.15)
    assert prior_shift(0.3, 0.3) == pytest.approx(0.0)
    # Evidence keeps its weight: odds ratios between two scores are unchanged.
    shift = prior_shift(0.5, 0.02)
    assert (2.0 + shift) - (-1.0 + shift) == pytest.approx(3.0)


def test_training_calibrates_the_mismatch_head_to_the_data_or_a_given_prior(
    synth_data: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from encoders.errors import ModelError

    report = train(synth_data, tmp_path / "a", _config(tiny_bert_dir), progress=False)
    calibration = report["mismatch_calibration"]
    # The synthetic catalogue has 15 % swapped covers, labelled no-click.
    assert 0.05 < calibration["prior"] < 0.3
    assert 0.3 < calibration["trained_positive_share"] < 0.8
    assert calibration["logit_shift"] < 0
    given = train(
        synth_data, tmp_path / "b", _config(tiny_bert_dir, mismatch_prior=0.01), progress=False
    )
    assert given["mismatch_calibration"]["prior"] == 0.01
    with pytest.raises(ModelError):
        train(
            synth_data, tmp_path / "c", _config(tiny_bert_dir, mismatch_prior=1.5), progress=False
        )


def test_validation_share_reports_on_training_products_never_the_test_split(
    synth_data: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from encoders.dataset import load_data

    report = train(
        synth_data, tmp_path / "v", _config(tiny_bert_dir, validation_share=0.3), progress=False
    )
    data = load_data(synth_data).with_validation(0.3, seed=0)
    assert report["evaluation_split"] == "validation"
    assert report["evaluation"]["test_listings"] == len(data.indices("validation"))
    assert report["data"]["train_listings"] == len(data.indices("train"))
    assert "on the validation split" in (tmp_path / "v" / "report.txt").read_text()
    # The appearance head was trained and its statistics set from the training features.
    towers, _ = load_checkpoint(tmp_path / "v" / "checkpoint.pt")
    assert towers.fusion.appearance_dim > 0
    whitening = towers.fusion.whitening
    assert not torch.equal(whitening, torch.eye(*whitening.shape))
    assert towers.fusion.appearance_weight.item() == TrainConfig().appearance_alpha
    assert report["history"][0]["appearance"] > 0
