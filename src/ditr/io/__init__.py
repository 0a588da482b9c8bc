"""Readers and writers of foreign formats: importers of datasets, synthetic rooms, PLY files."""
