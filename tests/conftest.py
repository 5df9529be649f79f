"""Puts ``tests/`` on the import path (pytest's default import mode), so that every test can use ``real_models``."""
