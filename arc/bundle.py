"""A trained model as a directory to share: safetensors weights and one JSON of settings, no pickle.

    OUT/arc.json              format, model spec (backbone {class_path, init_args}), field and fit settings,
                              preprocessing, class names, evaluation views, decoder hash (:class:`Settings`)
    OUT/model.safetensors     the :class:`~arc.model.ARCModel` state dict (normalisation statistics included)
    OUT/decoder.safetensors   the decoder with its record (:func:`arc.field.decoder.save_decoder`)

:func:`read_bundle` refuses a bundle whose decoder weights do not have the hash its settings name.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import save_model

from arc.field.decoder import load_decoder, save_decoder
from arc.field.errors import DecoderFileError
from arc.files import write_json
from arc.inference import ModelFileError, Predictor, Settings, build_model, check_decoder, load

__all__ = ["BUNDLE_FORMAT", "export_bundle", "read_bundle"]

BUNDLE_FORMAT = "arc-bundle/1"
SETTINGS, MODEL, DECODER = "arc.json", "model.safetensors", "decoder.safetensors"


def export_bundle(model: str | os.PathLike | Predictor, out: str | os.PathLike) -> Path:
    """Write the bundle of ``model`` (a :class:`Predictor`, or a checkpoint/bundle path) to the directory ``out``."""
    predictor = model if isinstance(model, Predictor) else load(model, device="cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_decoder(out / DECODER, predictor.decoder.cpu(), predictor.meta)
    save_model(predictor.model.cpu(), str(out / MODEL), metadata={"format": BUNDLE_FORMAT})
    write_json(out / SETTINGS, {"format": BUNDLE_FORMAT, **asdict(predictor.settings)})
    predictor.to(predictor.device)
    return out


def read_bundle(path: str | os.PathLike, device: torch.device | str | None = None) -> Predictor:
    """The :class:`Predictor` of the bundle directory ``path``; :class:`ModelFileError` (one line) when it is not one,
    a part is missing or broken, or its decoder weights do not match the settings' decoder hash."""
    path = Path(path)
    try:
        values = json.loads((path / SETTINGS).read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path} is neither an arc checkpoint nor a bundle directory "
                             f"(no readable {SETTINGS})") from err
    if not isinstance(values, dict) or values.get("format") != BUNDLE_FORMAT:
        raise ModelFileError(f"{path / SETTINGS} is not an arc bundle's settings (format {BUNDLE_FORMAT!r})")
    try:
        settings = Settings(**{f.name: values[f.name] for f in fields(Settings)})
    except KeyError as err:
        raise ModelFileError(f"{path / SETTINGS} lacks the setting {err}") from err
    try:
        decoder, meta = load_decoder(path / DECODER)
    except DecoderFileError as err:
        raise ModelFileError(f"bundle {path}: {err}") from err
    check_decoder(path, decoder, meta, settings.decoder_hash)
    return Predictor(build_model(path, settings, str(path / MODEL)), decoder, meta, settings, device)
