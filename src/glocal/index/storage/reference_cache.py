"""The reference cache: a directory of rendered reference images, one entry per key.

A reference cache directory (:class:`ReferenceCache`) holds one entry per key (a sha256 of the settings)::

    <dir>/<key>/entry.json             the images' file names and sha256, and what the caller stored with them
    <dir>/<key>/<i>.png                the rendered reference images
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .files import fsync_path, fsync_tree, to_json

__all__ = ["ReferenceCache"]

logger = logging.getLogger(__name__)


_ENTRY = "entry.json"
_ENTRY_FORMAT = 1


class ReferenceCache:
    """A directory of rendered reference images, one entry per key.

    The key is a sha256 over everything that changes the images (see :meth:`key`); an entry holds the PNG images and
    a small JSON document. Entries are written atomically (staged under a temporary name, then moved into place with
    :func:`os.replace`), and an entry that cannot be read back exactly (a missing or truncated file, a changed byte)
    counts as absent, so the next :meth:`put` rewrites it.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> cache = ReferenceCache(tempfile.mkdtemp())
    >>> key = ReferenceCache.key({"layer": "features.28", "concept": 3})
    >>> cache.get(key) is None
    True
    >>> cache.put(key, [Image.new("RGB", (4, 4), (255, 0, 0))], {"sample_ids": [7]})
    >>> [image.size for image in cache.get(key)], cache.meta(key)
    ([(4, 4)], {'sample_ids': [7]})
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        if self._path.exists() and not self._path.is_dir():
            raise NotADirectoryError(f"the reference cache {self._path} is a file; give a directory")
        self._path.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        """The cache directory."""
        return self._path

    @staticmethod
    def key(settings: Mapping[str, Any]) -> str:
        """The sha256 (hex) of ``settings``, a JSON-serialisable mapping, independent of key order."""
        text = json.dumps(json.loads(to_json(dict(settings), "reference settings")), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _entry_dir(self, key: str) -> Path:
        if not (isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
            raise ValueError(f"a reference cache key is a sha256 in hex (64 characters 0-9a-f), got {key!r}")
        return self._path / key

    def entry(self, key: str) -> tuple[list[Image.Image], dict[str, Any]] | None:
        """The images and stored metadata of ``key``, or ``None`` if the entry is absent or corrupted."""
        directory = self._entry_dir(key)
        if not directory.is_dir():
            return None
        try:
            document = json.loads((directory / _ENTRY).read_text(encoding="utf-8"))
            if not isinstance(document, dict) or document.get("format") != _ENTRY_FORMAT:
                raise ValueError(f"{_ENTRY} is not a reference cache entry of format {_ENTRY_FORMAT}")
            images = []
            for item in document["images"]:
                name = str(item["file"])
                if "/" in name or name.startswith("."):
                    raise ValueError(f"image file name {name!r} points outside the entry")
                data = (directory / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != item["sha256"]:
                    raise ValueError(f"{name} does not match its sha256")
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                    images.append(image.copy())
            meta = document["meta"]
            if not isinstance(meta, dict):
                raise ValueError("the stored metadata is not a JSON object")
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring corrupted reference cache entry %s (%s); it will be rewritten", directory, error)
            return None
        return images, meta

    def get(self, key: str) -> list[Image.Image] | None:
        """The images of ``key``, or ``None`` if the entry is absent or corrupted."""
        found = self.entry(key)
        return None if found is None else found[0]

    def meta(self, key: str) -> dict[str, Any] | None:
        """The metadata stored with ``key``, or ``None`` if the entry is absent or corrupted."""
        found = self.entry(key)
        return None if found is None else found[1]

    def put(self, key: str, images: Sequence[Image.Image], meta: Mapping[str, Any]) -> None:
        """Store ``images`` (as PNG) and ``meta`` (JSON-serialisable) under ``key``, replacing any entry there."""
        target = self._entry_dir(key)
        meta_text = to_json(dict(meta), "reference metadata")
        tmp = self._path / f".{key}.tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            listed = []
            for number, image in enumerate(images):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data = buffer.getvalue()
                name = f"{number}.png"
                (tmp / name).write_bytes(data)
                listed.append({"file": name, "sha256": hashlib.sha256(data).hexdigest()})
            document = {"format": _ENTRY_FORMAT, "images": listed, "meta": json.loads(meta_text)}
            (tmp / _ENTRY).write_text(to_json(document, "reference cache entry"), encoding="utf-8")
            fsync_tree(tmp)
            if target.exists():  # an old or corrupted entry: move it aside first (a directory cannot replace another)
                trash = self._path / f".{key}.old-{uuid.uuid4().hex}"
                try:
                    os.replace(target, trash)
                except FileNotFoundError:  # another process removed it meanwhile
                    pass
                else:
                    shutil.rmtree(trash, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.is_dir():  # not a concurrent writer of the same entry: a real failure
                    raise
            fsync_path(self._path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"ReferenceCache({str(self._path)!r})"
