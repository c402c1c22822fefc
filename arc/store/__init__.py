"""The sharded cloud store on disk (``STORE/manifest.json`` + ``STORE/<split>/shard-<k>.safetensors``).

- :mod:`arc.store.keys` — store and decoder keys (hashes of the settings) and default paths;
- :mod:`arc.store.layout` — the file format: manifest and shard files, read, written and checked;
- :mod:`arc.store.cloud_store` — :class:`CloudStore`, a store directory, and :func:`latent_statistics`.

The torch ``Dataset`` over a store is :class:`arc.data.clouds.CloudDataset`.
"""
from arc.store.cloud_store import CloudStore, as_store, latent_statistics
from arc.store.keys import decoder_key, default_decoder_path, default_store_dir, source_slug, store_key
from arc.store.layout import StoreError

__all__ = [
    "CloudStore",
    "StoreError",
    "as_store",
    "decoder_key",
    "default_decoder_path",
    "default_store_dir",
    "latent_statistics",
    "source_slug",
    "store_key",
]
