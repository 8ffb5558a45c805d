"""Particle images for averaging: one box per particle in Fourier space with its weight.

Every kind of particle image — a plain subtomogram cut from a tomogram, a pseudo-subtomogram
accumulated from the tilt series, a subtomogram imported from RELION 3.1 — reaches alignment
and reconstruction as :class:`ParticleImages`, CTF-premultiplied, with the weight that says
how much signal each Fourier voxel carries. Scoring and reconstruction then have one code path:

    reconstruction = Σ_i R_i(data_ft_i) / (Σ_i R_i(weight_i) + regulariser)

On disk a particle image is a ``Subtomogram`` item: ``path`` is the real-space box (MRC, B³),
``weight_path`` the weight box (MRC, B³, zero frequency at index B // 2 as RELION 3.1 writes
``rlnCtfImage``) and ``ctf_premultiplied`` says which of two conventions they follow:

- True: ``path`` holds the inverse FT of the premultiplied data and ``weight_path`` Σ h_t²;
- False: ``path`` is a plain subtomogram and ``weight_path`` its signed 3D CTF model C
  (RELION 3.1 style); the loader premultiplies: data_ft = C · FT(box), weight = C².
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft

from tomoweave.algorithms.fourier import rfft_from_centred_grid
from tomoweave.formats.mrc import read_mrc
from tomoweave.model import Subtomogram


@dataclass
class ParticleImages:
    """N particle images in one box, ready for alignment and reconstruction.

    data_ft : complex64 (N, B, B, B//2+1), rfftn layout (zero frequency at [0,0,0], not shifted),
        of a real-space box whose centre (index B//2) is the particle's current position.
        CTF-premultiplied: for tilt t with transfer h_t = d_t c_t (CTF c_t at the particle's
        defocus times the exposure envelope d_t) the Fourier slice holds Σ_t h_t X_t, where
        X_t = h_t S + noise is the observed slice.
    weight : float32 (N, B, B, B//2+1), same grid: Σ_t h_t² (the "CTF² volume"; zero where
        no tilt sampled: the missing wedge). The model of data_ft is weight * S.
    multiplicity : float32 (N, B, B, B//2+1) or None: how many slices touched each voxel.
    pixel_size_a : float
    """

    data_ft: np.ndarray
    weight: np.ndarray
    multiplicity: np.ndarray | None
    pixel_size_a: float

    def __post_init__(self) -> None:
        if self.data_ft.ndim != 4 or self.data_ft.shape != self.weight.shape:
            raise ValueError(f"data_ft {self.data_ft.shape} and weight {self.weight.shape} must "
                             f"both be (N, B, B, B//2+1)")
        box = self.data_ft.shape[1]
        if self.data_ft.shape[1:] != (box, box, box // 2 + 1):
            raise ValueError(f"data_ft {self.data_ft.shape}: expected (N, B, B, B//2+1)")
        if self.multiplicity is not None and self.multiplicity.shape != self.weight.shape:
            raise ValueError(f"multiplicity {self.multiplicity.shape} differs from weight "
                             f"{self.weight.shape}")

    def __len__(self) -> int:
        return self.data_ft.shape[0]

    @property
    def box_px(self) -> int:
        return self.data_ft.shape[1]

    def real_space(self, index: int) -> np.ndarray:
        """Real-space box (B³, float32) of the premultiplied data of particle ``index``."""
        box = (self.box_px,) * 3
        return scipy.fft.irfftn(self.data_ft[index], box, workers=-1).astype(np.float32)


def premultiply(box: np.ndarray, ctf_rfft: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(data_ft, weight) of a plain subtomogram with the signed 3D CTF model C (rfft grid)."""
    spectrum = scipy.fft.rfftn(np.asarray(box, dtype=np.float32), workers=-1)
    return (spectrum * ctf_rfft).astype(np.complex64), (ctf_rfft * ctf_rfft).astype(np.float32)


def load_particle_images(subtomograms: Sequence[Subtomogram],
                         resolve_path: Callable[[str], Path | str], *,
                         indices: slice | Sequence[int] | None = None) -> ParticleImages:
    """ParticleImages of ``subtomograms`` (all, or those at ``indices``: a batch).

    Parameters
    ----------
    subtomograms : sequence of Subtomogram
        One box size and pixel size for all; ``weight_path`` may be None (then the weight is 1
        everywhere: a full, CTF-free sampling).
    resolve_path : callable(str) -> path
        Turns an item's project-relative path into a file path (a protocol passes
        ``context.resolve``).
    indices : slice or sequence of int, optional
        The particles to load; memory is N · B³ · 12 bytes (16 with multiplicity).

    Raises
    ------
    ValueError
        A file that cannot be read, or a box or weight whose size disagrees, named with the
        subtomogram and the field.
    """
    chosen = list(subtomograms)
    if indices is not None:
        chosen = chosen[indices] if isinstance(indices, slice) else [chosen[i] for i in indices]
    if not chosen:
        raise ValueError("load_particle_images: no subtomograms")
    box_px, pixel_size_a = chosen[0].box_size_px, chosen[0].pixel_size_a
    shape = (len(chosen), box_px, box_px, box_px // 2 + 1)
    data_ft = np.empty(shape, dtype=np.complex64)
    weight = np.empty(shape, dtype=np.float32)
    with_multiplicity = all(s.multiplicity_path for s in chosen)
    multiplicity = np.empty(shape, dtype=np.float32) if with_multiplicity else None
    cache: dict[str, np.ndarray] = {}  # weights shared by many particles are read once
    for index, item in enumerate(chosen):
        if item.box_size_px != box_px or not np.isclose(item.pixel_size_a, pixel_size_a,
                                                        rtol=1e-4):
            raise ValueError(f"{item.name}: box {item.box_size_px} px at {item.pixel_size_a} Å; "
                             f"the first subtomogram has {box_px} px at {pixel_size_a} Å")
        box = _read_volume(item, "path", resolve_path, cache=None)
        fourier = (_read_volume(item, "weight_path", resolve_path, cache) if item.weight_path
                   else np.ones(shape[1:], dtype=np.float32))
        if item.ctf_premultiplied:
            data_ft[index] = scipy.fft.rfftn(box, workers=-1)
            weight[index] = fourier
        else:
            data_ft[index], weight[index] = premultiply(box, fourier)
        if multiplicity is not None:
            multiplicity[index] = _read_volume(item, "multiplicity_path", resolve_path, cache)
    return ParticleImages(data_ft, weight, multiplicity, float(pixel_size_a))


def _read_volume(item: Subtomogram, field: str, resolve_path, cache: dict | None) -> np.ndarray:
    """The box of ``item.<field>``: real space for ``path``, else the rfft half of a centred
    Fourier weight."""
    written = getattr(item, field)
    if cache is not None and written in cache:
        return cache[written]
    path = resolve_path(written)
    try:
        volume, _ = read_mrc(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{item.name}: {field} {path}: {error}") from None
    box = item.box_size_px
    if volume.shape != (box,) * 3:
        raise ValueError(f"{item.name}: {field} {path}: shape {volume.shape[::-1]} (x, y, z), "
                         f"expected {box}³ (box_size_px)")
    if not np.all(np.isfinite(volume)):
        raise ValueError(f"{item.name}: {field} {path}: holds NaN or infinite values")
    result = volume.astype(np.float32) if field == "path" else rfft_from_centred_grid(volume)
    if cache is not None:
        cache[written] = result
    return result


def image_source(subtomograms: Sequence[Subtomogram], resolve_path: Callable[[str], Path | str],
                 *, memory_budget_bytes: float = 2e9):
    """An :class:`~tomoweave.algorithms.averaging.sources.ImageSource` over subtomograms on
    disk: batches are read when the refinement asks for them (cropped batches are kept while
    they fit in ``memory_budget_bytes``).

    Parameters
    ----------
    subtomograms : sequence of Subtomogram
        One box and pixel size for all (checked here, with the item named).
    resolve_path : callable(str) -> path
        Turns the items' project-relative paths into files (``context.resolve``).
    """
    from tomoweave.algorithms.averaging.sources import ImageSource

    chosen = list(subtomograms)
    if not chosen:
        raise ValueError("image_source: no subtomograms")
    box_px, pixel_size_a = chosen[0].box_size_px, chosen[0].pixel_size_a
    for item in chosen:
        if item.box_size_px != box_px or not np.isclose(item.pixel_size_a, pixel_size_a,
                                                        rtol=1e-4):
            raise ValueError(f"{item.name}: box {item.box_size_px} px at {item.pixel_size_a} Å; "
                             f"the first subtomogram has {box_px} px at {pixel_size_a} Å")

    def load(indices):
        images = load_particle_images(chosen, resolve_path, indices=list(indices))
        return images.data_ft, images.weight

    return ImageSource(len(chosen), box_px, pixel_size_a, load,
                       memory_budget_bytes=memory_budget_bytes)
