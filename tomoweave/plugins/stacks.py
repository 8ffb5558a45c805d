"""What several plugins need to hand a program its input files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomoweave.engine import ItemError, ProcessContext
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.model import TiltSeries


def series_stack(item: TiltSeries, context: ProcessContext) -> Path:
    """The series' images as one MRC stack in its tilt order: its own stack when it already is
    one, else a stack written into the task's work folder."""
    paths = {t.image_path for t in item.tilts}
    if None in paths:
        raise ItemError(f"{item.name}: a tilt has no image")
    if len(paths) == 1 and [t.image_index for t in item.tilts] == list(range(len(item.tilts))):
        return context.resolve(item.tilts[0].image_path)
    try:
        images = [read_mrc(context.resolve(t.image_path))[0] for t in item.tilts]
    except MrcError as error:
        raise ItemError(str(error)) from None
    slices = [i[t.image_index] if i.ndim == 3 else i for i, t in zip(images, item.tilts,
                                                                      strict=True)]
    return write_mrc(context.work_dir / f"{item.name}.mrc", np.stack(slices), item.pixel_size_a,
                     stack=True)
