"""Where images come from: a registry of Source classes (see :mod:`datakit.sources.base`)."""
from datakit.sources.base import SOURCES, Source, SourceItem, get_source, register_source

__all__ = ["SOURCES", "Source", "SourceItem", "get_source", "register_source"]
