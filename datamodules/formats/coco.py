"""COCO captions and Karpathy-split caption files, told apart by their keys.

COCO (``captions_train2017.json``): ``images: [{id, file_name}]`` plus a flat
``annotations: [{image_id, caption}]`` list. Karpathy (``dataset_coco.json``,
``dataset_flickr30k.json``): ``images: [{filepath?, filename, sentences: [{raw}],
split, cocoid | imgid}]``. Either may carry our own per-image ``label`` and
``meta``, which the writers add so a round trip keeps them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlp.datamodules.formats.decode import MAX_PIXELS
from vlp.datamodules.formats.fields import parse_entry, require_fields
from vlp.datamodules.formats.sample import RawSample
from vlp.datamodules.formats.source import RecordSource
from vlp.datamodules.records import BadSampleError

KARPATHY_SPLITS = ("train", "val", "test", "restval")


class CocoCaptions(RecordSource):
    """One record per image listed in the file, with all of its captions.

    ``split`` (one name or several, e.g. ``("train", "restval")``) selects
    Karpathy splits; COCO files are already one split each, so it must be None.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        image_root: str | os.PathLike,
        split: str | Sequence[str] | None = None,
        on_error: str = "skip",
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.path = Path(annotation_file)
        self.image_root = Path(image_root)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as error:  # bad JSON, or bytes that are not UTF-8
            raise ValueError(f"{self.path}: not a JSON caption file: {error}") from error
        require_fields(self.path, {"images": "images"}, data if isinstance(data, dict) else ())
        if "annotations" in data:
            if split is not None:
                raise ValueError(
                    f"{self.path}: split={split!r} given, but COCO files hold one split"
                )
            samples = self._coco(data)
        else:
            samples = self._karpathy(data, (split,) if isinstance(split, str) else split)
        super().__init__(samples, on_error, max_pixels)

    def _coco(self, data: dict[str, Any]) -> list[RawSample | BadSampleError]:
        """One sample per image; and, for each image id that annotations name but no image
        has, a bad field (its captions have no image to go with)."""
        captions: dict[object, list[object]] = {}
        first_annotation: dict[object, int] = {}
        for index, annotation in enumerate(data["annotations"]):
            image_id = annotation.get("image_id")
            captions.setdefault(image_id, []).append(annotation.get("caption"))
            first_annotation.setdefault(image_id, index)
        samples = [
            self._sample(
                i, entry, entry.get("file_name"), entry.get("id"), captions.get(entry.get("id"), [])
            )
            for i, entry in enumerate(data["images"])
        ]
        image_ids = {entry.get("id") for entry in data["images"]}
        for image_id, orphans in captions.items():
            if image_id in image_ids:
                continue
            where = f"{self.path}:annotations[{first_annotation[image_id]}]"
            detail = f"image_id {image_id!r} of {len(orphans)} captions matches no image"
            samples.append(BadSampleError("bad_field", where, detail))
        return samples

    def _karpathy(
        self, data: dict[str, Any], splits: Sequence[str] | None
    ) -> list[RawSample | BadSampleError]:
        unknown = set(splits or ()) - set(KARPATHY_SPLITS)
        if unknown:
            raise ValueError(
                f"{self.path}: unknown splits {sorted(unknown)}; use {KARPATHY_SPLITS}"
            )
        samples: list[RawSample | BadSampleError] = []
        for i, entry in enumerate(data["images"]):
            if splits is not None and entry.get("split") not in splits:
                continue
            filename = entry.get("filename")
            if isinstance(filename, str) and entry.get("filepath"):
                filename = f"{entry['filepath']}/{filename}"
            image_id = entry.get("cocoid", entry.get("imgid"))
            sentences = [
                s.get("raw") if isinstance(s, dict) else s for s in entry.get("sentences", [])
            ]
            samples.append(self._sample(i, entry, filename, image_id, sentences))
        return samples

    def _sample(
        self, index: int, entry: dict[str, Any], filename: object, image_id: object, captions: list
    ) -> RawSample | BadSampleError:
        where = f"{self.path}:images[{index}]"
        if not isinstance(filename, str) or not filename:
            return BadSampleError("bad_field", where, f"image file name {filename!r}")
        return parse_entry(
            self.image_root / filename,
            captions,
            image_id=image_id,
            label=entry.get("label"),
            meta=entry.get("meta"),
            id_fallback=filename,
            key=str(self.image_root / filename),
            where=where,
        )
