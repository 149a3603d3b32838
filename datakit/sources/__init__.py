"""Where images come from: a registry of Source classes (see :mod:`datakit.sources.base`)."""
from datakit.sources.base import SOURCES, Source, SourceItem, get_source, register_source

# built-in sources register themselves on import
from datakit.sources import folder, idx, sklearn_digits, torchvision_source, usps  # noqa: E402,F401
from datakit.sources import candidates  # noqa: E402,F401  (the "candidates" kind, issue 5)
from datakit.sources import huggingface  # noqa: E402,F401  (the "huggingface" kind, issue 15)
from datakit.sources.decode import item_to_image, load_image, sniff_format, to_array  # noqa: E402
from datakit.sources.idx import read_idx, write_idx  # noqa: E402

__all__ = ["SOURCES", "Source", "SourceItem", "get_source", "register_source",
           "load_image", "sniff_format", "to_array", "item_to_image", "read_idx", "write_idx"]
