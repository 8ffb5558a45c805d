"""reconstruct.wbp and reconstruct.sirt: tomograms from aligned tilt series.

The tilt images are read memory-mapped one at a time, Fourier-binned on the fly, resampled once
through their alignment (the projection matrices of tomoweave.geometry) and back-projected by the
tiled numba projector. Even/odd tomograms come from the tilts' even/odd sums when present.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from tomoweave.algorithms import reconstruction
from tomoweave.algorithms.binning import fourier_bin_image
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import MrcError, mmap_mrc, write_mrc
from tomoweave.geometry import projection_matrix
from tomoweave.geometry.coordinates import bin_pixel_size_a, binned_size
from tomoweave.model import TiltImage, TiltSeries, Tomogram

HALVES = ("even", "odd")


class _CommonParams(BaseModel):
    thickness_a: float = param(1000.0, gt=0, unit="Å", help="tomogram thickness")
    binning: float = param(4.0, ge=1, le=32, help="Fourier binning of the tilts (tomogram voxel "
                                                  "= pixel size × binning)")
    ctf_correction: Literal["none", "phase_flip", "3d"] = param(
        "none", choices=list(reconstruction.CTF_MODES),
        help="none; phase_flip: flip each tilt in strips parallel to the tilt axis; 3d: flip "
             "per height slab of the tomogram (novaCTF-like, WBP only)")
    defocus_step_a: float | None = param(None, gt=0, unit="Å", help="defocus spacing of the "
                                         "strips/slabs (default: pixel² / wavelength)")
    even_odd: bool = param(True, help="also reconstruct the even/odd halves when the tilts "
                                      "have even/odd sums")


class WbpParams(_CommonParams):
    filter: Literal["ramp", "shepp-logan", "cosine", "hamming", "sirt-like"] = param(
        "ramp", choices=list(reconstruction.FILTERS), help="weighting of the back-projection")
    sirt_like_iterations: int = param(10, ge=1, le=200, help="iterations the sirt-like filter "
                                                           "imitates")


class SirtParams(_CommonParams):
    iterations: int = param(15, ge=1, le=500, help="number of SIRT iterations")
    relaxation: float = param(1.0, gt=0, le=2, help="SIRT relaxation factor")


class _Reconstruct(Protocol):
    inputs = {"tilt_series": Input(TiltSeries, help="aligned tilt series")}
    outputs = {"tomograms": Output(Tomogram, help="reconstructed tomograms")}
    method = ""

    def reconstruct(self, load: Callable, geometry: reconstruction.Geometry,
                    ctf: reconstruction.CtfSettings | None, params: Any) -> np.ndarray:
        raise NotImplementedError

    def process(self, item: TiltSeries, params: Any, context: ProcessContext) -> dict[str, Any]:
        tilts = checked_tilts(item, params.ctf_correction)
        pixel_size_a = bin_pixel_size_a(item.pixel_size_a, params.binning)
        shape_yx = (binned_size(item.image_size_xy[1], params.binning),
                    binned_size(item.image_size_xy[0], params.binning))
        matrices = np.stack([_matrix(t) for t in tilts])
        geometry = reconstruction.make_geometry(matrices, shape_yx, pixel_size_a,
                                                params.thickness_a)
        ctf = ctf_settings(item, tilts, params) if params.ctf_correction != "none" else None
        paths: dict[str, str | None] = {}
        kinds = ["image"]
        if params.even_odd:
            if all(t.even_path and t.odd_path for t in tilts):
                kinds += list(HALVES)
            else:
                context.log(f"{item.name}: no even/odd sums on every tilt; only the full tomogram")
        for kind in kinds:
            with tilt_loader(tilts, kind, params.binning, shape_yx, context) as load:
                volume = self.reconstruct(load, geometry, ctf, params)
            suffix = "" if kind == "image" else f"_{kind}"
            path = write_mrc(context.output_path(f"{item.name}{suffix}.mrc"), volume, pixel_size_a)
            paths[kind] = context.relative(path)
            if kind == "image":
                slices_png(volume, context.output_path(f"{item.name}_slices.png"),
                           f"{item.name} {self.method} bin {params.binning:g}")
            del volume
        nz, ny, nx = geometry.volume_shape_zyx
        context.log(f"{item.name}: {self.method} of {len(tilts)} tilts into {nx}x{ny}x{nz} at "
                    f"{pixel_size_a:.2f} Å/voxel, CTF correction {params.ctf_correction}")
        return {"tomograms": Tomogram(
            name=item.name, path=paths["image"], pixel_size_a=pixel_size_a, size_xyz=(nx, ny, nz),
            tilt_series=item.name, acquisition=item.acquisition, even_path=paths.get("even"),
            odd_path=paths.get("odd"), method=self.method, binning=params.binning,
            ctf_corrected=params.ctf_correction != "none")}


class ReconstructWbp(_Reconstruct):
    """Weighted back-projection with a choice of filters and optional CTF phase flipping."""

    name = "reconstruct.wbp"
    label = "Reconstruct tomogram (WBP)"
    Params = WbpParams
    method = "WBP"
    citations = [
        "Radermacher M (1988) Three-dimensional reconstruction of single particles from random "
        "and nonrandom tilt series. J Electron Microsc Tech 9:359-394. doi:10.1002/jemt.1060090405",
        "Turoňová B, Schur FKM, Wan W, Briggs JAG (2017) Efficient 3D-CTF correction for "
        "cryo-electron tomography using NovaCTF improves subtomogram averaging resolution to "
        "3.4 Å. J Struct Biol 199:187-195. doi:10.1016/j.jsb.2017.07.007",
    ]

    def reconstruct(self, load, geometry, ctf, params: WbpParams) -> np.ndarray:
        return reconstruction.reconstruct_wbp(load, geometry, params.filter, ctf,
                                              params.ctf_correction, params.sirt_like_iterations)


class ReconstructSirt(_Reconstruct):
    """SIRT with a fixed number of iterations (phase flipping in strips when asked)."""

    name = "reconstruct.sirt"
    label = "Reconstruct tomogram (SIRT)"
    Params = SirtParams
    method = "SIRT"
    citations = [
        "Gilbert P (1972) Iterative methods for the three-dimensional reconstruction of an "
        "object from projections. J Theor Biol 36:105-117. doi:10.1016/0022-5193(72)90180-4",
    ]

    def reconstruct(self, load, geometry, ctf, params: SirtParams) -> np.ndarray:
        return reconstruction.reconstruct_sirt(load, geometry, params.iterations,
                                               params.relaxation, ctf, params.ctf_correction)


# ----------------------------------------------------------------------------- helpers
def checked_tilts(item: TiltSeries, ctf_correction: str) -> list[TiltImage]:
    """The included tilts, after checking they carry what reconstruction needs."""
    tilts = item.included_tilts()
    if not tilts:
        raise ItemError(f"{item.name}: every tilt is excluded; nothing to reconstruct")
    missing = [t for t in tilts if t.alignment is None]
    if missing:
        angles = ", ".join(f"{t.tilt_deg:+.1f}°" for t in missing[:5])
        raise ItemError(
            f"{item.name}: the tilt series is not aligned ({len(missing)} of {len(tilts)} tilts "
            f"have no alignment, e.g. {angles}); run align.fiducial, align.patch or align.xcorr "
            f"on it first, or import an alignment (import.imod, import.aretomo, import.relion5)")
    if ctf_correction != "none" and any(t.ctf is None for t in tilts):
        raise ItemError(f"{item.name}: ctf_correction={ctf_correction} needs a CTF on every tilt; "
                        f"run ctf.estimate (or import.ctffind) first, or set ctf_correction=none")
    if any(t.image_path is None for t in tilts):
        raise ItemError(f"{item.name}: tilts have no images (movies only? run motion.correct)")
    return tilts


def _matrix(tilt: TiltImage) -> np.ndarray:
    a = tilt.alignment
    return projection_matrix(a.y_tilt_deg, a.x_tilt_deg, a.z_rot_deg, a.shift_x_a, a.shift_y_a,
                             a.magnification)


def ctf_settings(item: TiltSeries, tilts: list[TiltImage], params) -> reconstruction.CtfSettings:
    acquisition = item.acquisition
    return reconstruction.CtfSettings(
        defocus_u_a=[t.ctf.defocus_u_a for t in tilts],
        defocus_v_a=[t.ctf.defocus_v_a for t in tilts],
        astigmatism_angle_deg=[t.ctf.astigmatism_angle_deg for t in tilts],
        phase_shift_deg=[t.ctf.phase_shift_deg for t in tilts],
        voltage_kv=acquisition.voltage_kv,
        spherical_aberration_mm=acquisition.spherical_aberration_mm,
        amplitude_contrast=acquisition.amplitude_contrast,
        defocus_step_a=params.defocus_step_a)


@contextlib.contextmanager
def tilt_loader(tilts: list[TiltImage], kind: str, binning: float, shape_yx: tuple[int, int],
                context: ProcessContext):
    """``load(i)``: tilt i's image (or even/odd sum), memory-mapped and Fourier-binned."""
    with contextlib.ExitStack() as stack:
        maps: dict[str, Any] = {}

        def load(index: int) -> np.ndarray:
            tilt = tilts[index]
            stored = getattr(tilt, "image_path" if kind == "image" else f"{kind}_path")
            slice_index = getattr(tilt, "image_index" if kind == "image" else f"{kind}_index")
            if stored not in maps:
                path = context.resolve(stored)
                try:
                    maps[stored] = stack.enter_context(mmap_mrc(path)).data
                except MrcError as error:
                    raise ItemError(str(error)) from None
            data = maps[stored]
            data = data if data.ndim == 3 else data[np.newaxis]
            if slice_index >= data.shape[0]:
                raise ItemError(f"{stored}: has {data.shape[0]} slices, tilt "
                                f"{tilt.tilt_deg:+.1f}° needs slice {slice_index}")
            image = fourier_bin_image(np.asarray(data[slice_index]), binning)
            if image.shape != shape_yx:
                raise ItemError(f"{stored}: slice {slice_index} bins to {image.shape}, expected "
                                f"{shape_yx} from the series' image size")
            return image

        yield load


def slices_png(volume: np.ndarray, path: Path, title: str) -> None:
    """Central XY and XZ slices of a tomogram, side by side, robust grey scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nz, ny, nx = volume.shape
    xy, xz = volume[nz // 2], volume[:, ny // 2, :]
    low, high = np.percentile(volume[nz // 4: nz - nz // 4 or None], [1, 99])
    figure, axes = plt.subplots(2, 1, figsize=(6, 6 * (ny + nz) / nx + 0.6),
                                gridspec_kw={"height_ratios": [ny, nz]})
    for axis, image, label in ((axes[0], xy, "central XY slice"), (axes[1], xz, "central XZ")):
        axis.imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower")
        axis.set_title(f"{title}: {label}", fontsize=9)
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
