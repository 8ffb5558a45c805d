"""The project on disk: the SQLite catalog, run folders and atomic file writes."""

from tomoweave.store.catalog import Catalog, ItemRecord, RunRecord, SetRecord
from tomoweave.store.project_dir import ProjectLayout, atomic_write_text

__all__ = ["Catalog", "ItemRecord", "RunRecord", "SetRecord", "ProjectLayout", "atomic_write_text"]
