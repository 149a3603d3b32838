"""The dataset directory: content-addressed images, manifest, atomic writes."""
from datakit.store.atomic import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_parquet, atomic_write_text
from datakit.store.images import ImageStore, content_id
from datakit.store.manifest import MANIFEST_COLUMNS, REJECTED_COLUMNS, empty_manifest, empty_rejected

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "ImageStore",
    "content_id",
    "MANIFEST_COLUMNS",
    "REJECTED_COLUMNS",
    "empty_manifest",
    "empty_rejected",
]
