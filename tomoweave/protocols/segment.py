"""segment.membranes: membranes in tomograms, one label per membrane."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms import membranes
from tomoweave.engine import Input, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import write_mrc
from tomoweave.model import Segmentation, Tomogram
from tomoweave.protocols.pick import _read


class SegmentMembranesParams(BaseModel):
    thickness_a: float = param(50.0, gt=0, unit="Å", help="membrane thickness (Hessian scale)")
    polarity: Literal["dark", "bright"] = param("dark", choices=["dark", "bright"],
                                                help="contrast of membranes in the tomogram")
    threshold: float | None = param(None, ge=0, help="sheetness threshold (default: automatic)")
    min_area_a2: float = param(2.0e5, ge=0, unit="Å²", help="smallest membrane kept")
    thin: bool = param(True, help="reduce each membrane to its middle surface")


class SegmentMembranes(Protocol):
    """Membrane detection by a Hessian sheetness filter, labelled per membrane."""

    name = "segment.membranes"
    label = "Segment membranes"
    description = ("Finds thin sheets (membranes) with a Hessian ridge filter at the membrane's "
                   "thickness, keeps them by hysteresis, thins them and labels each connected "
                   "membrane. Output: a label volume per tomogram.")
    Params = SegmentMembranesParams
    inputs = {"tomograms": Input(Tomogram, help="tomograms to segment")}
    outputs = {"segmentations": Output(Segmentation, help="label volumes (0 = background)")}
    citations = [
        "Frangi AF, Niessen WJ, Vincken KL, Viergever MA (1998) Multiscale vessel enhancement "
        "filtering. MICCAI 1998, LNCS 1496:130-137. doi:10.1007/BFb0056195",
        "Martinez-Sanchez A, Garcia I, Asano S, Lucic V, Fernandez JJ (2014) Robust membrane "
        "detection based on tensor voting for electron tomography. J Struct Biol 186:49-61. "
        "doi:10.1016/j.jsb.2014.02.015",
    ]

    def process(self, item: Tomogram, params: SegmentMembranesParams,
                context: ProcessContext) -> dict[str, Any]:
        tomogram = _read(context, item.path, item.name)
        result = membranes.segment_membranes(tomogram, item.pixel_size_a, params.thickness_a,
                                             params.polarity, params.threshold,
                                             params.min_area_a2, params.thin)
        path = write_mrc(context.output_path(f"{item.name}_membranes.mrc"),
                         result.labels.astype(np.float32), item.pixel_size_a)
        sizes = np.bincount(result.labels.ravel())[1:]
        context.log(f"{result.count} membranes (sheetness threshold "
                    f"{result.threshold:.3g}; voxels per membrane {sizes.tolist()[:10]})")
        _labels_png(tomogram, result.labels, context.output_path(f"{item.name}_membranes.png"),
                    f"{item.name}: {result.count} membranes")
        return {"segmentations": Segmentation(
            name=item.name, path=context.relative(path), tomogram=item.name,
            pixel_size_a=item.pixel_size_a, label_count=result.count)}


def _labels_png(tomogram: np.ndarray, labels: np.ndarray, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = tomogram.shape[0]
    rows = slice(depth // 3, max(depth // 3 + 1, 2 * depth // 3))
    image = np.asarray(tomogram[rows], dtype=np.float32).mean(axis=0)
    label_image = np.asarray(labels[rows]).max(axis=0).astype(float)
    label_image[label_image == 0] = np.nan
    low, high = np.percentile(image, [1, 99])
    figure, axis = plt.subplots(figsize=(6, 6))
    axis.imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower")
    axis.imshow(label_image, cmap="tab20", alpha=0.6, origin="lower", interpolation="nearest")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
