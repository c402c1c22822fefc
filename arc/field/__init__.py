"""The INR: position sampling, neighbour index, decoder, batched decode and fitting (pure PyTorch)."""
from arc.field.colour import check_sample, from_fit_space, to_fit_space
from arc.field.config import FieldConfig, FitConfig, PretrainConfig
from arc.field.decode import decode_queries, render
from arc.field.decoder import Decoder, DecoderMeta, decoder_hash, load_decoder, save_decoder
from arc.field.errors import DecoderFileError, FieldInputError
from arc.field.fitting import FitResult, LatentGradient, fit_clouds, fit_group, pack_groups
from arc.field.group import FieldGroup, Pass
from arc.field.latent_init import PatchInit
from arc.field.neighbours import nearest_latents, pixel_grid, pixel_neighbours, sample_grid, sample_neighbours
from arc.field.pretraining import JointTraining, new_decoder, pretrain_decoder
from arc.field.sampling import gradient_norm, latent_count, sample_latent_count, sample_positions

__all__ = [
    "Decoder",
    "DecoderFileError",
    "DecoderMeta",
    "FieldConfig",
    "FieldGroup",
    "FieldInputError",
    "FitConfig",
    "FitResult",
    "JointTraining",
    "LatentGradient",
    "Pass",
    "PatchInit",
    "PretrainConfig",
    "check_sample",
    "decode_queries",
    "decoder_hash",
    "fit_clouds",
    "fit_group",
    "from_fit_space",
    "gradient_norm",
    "latent_count",
    "load_decoder",
    "nearest_latents",
    "new_decoder",
    "pack_groups",
    "pixel_grid",
    "pixel_neighbours",
    "pretrain_decoder",
    "render",
    "sample_grid",
    "sample_latent_count",
    "sample_neighbours",
    "sample_positions",
    "save_decoder",
    "to_fit_space",
]
