"""The params schema: section types with their shapes and ranges (no registry, no data)."""
