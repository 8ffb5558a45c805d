"""Particle sets with known heterogeneity: two species, a hinge motion, junk (classification).

Classification needs many particles whose identity is known, quickly. Rather than simulating
whole tomograms, each particle's tilt series is formed directly in Fourier space with the
physics and acquisition of a simulator preset (``sta_test`` by default: 10 Å/px, ±60° every
3° dose-symmetric, 3 e/Å² per tilt, 30 000 Å defocus, 800 Å of ice):

    slice_t(q)  = 2 σ(V) · pixel · FT₃[V_particle](R_tᵀ (q, 0))        (central-slice theorem)
    X_t(q)      = h_t(q) · slice_t(q) + FT₂[n_t],   n_t white, std 1 / sqrt(counts per pixel)

with V the excess potential (``protein_contrast_v`` × template, peak 1), σ the interaction
constant, h_t the CTF at the particle's own defocus (its height in the tilted specimen) times
the exposure damping (``fourier.tilt_transfers``), and counts = dose · pixel² · exp(−ice path /
mean free path) as in ``sim.imaging``. The slices are inserted as a pseudo-subtomogram
(``averaging.insertion``): data = Σ h X, weight = Σ h², the ``ParticleImages`` model.

Species maps are the templates of ../shared/data/templates_10A; the hinge moves the part of a
template beyond a plane, rotated about an axis in that plane; junk boxes sit at random places
of the tomogram: empty ice, or a particle of the set cut by the box edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from tomoweave.algorithms import volumes
from tomoweave.algorithms.averaging import gridding
from tomoweave.algorithms.averaging.insertion import insert_slices, to_rfft_data
from tomoweave.algorithms.averaging.particle_images import ParticleImages
from tomoweave.algorithms.fourier import tilt_transfers
from tomoweave.geometry.rotations import random_rotations, rotation_y
from tomoweave.geometry.sampling import rotations_from_vectors_deg
from tomoweave.sim.config import SimConfig, resolve_config
from tomoweave.sim.imaging import interaction_constant_rad_per_v_a
from tomoweave.sim.templates import load_template
from tomoweave.sim.tilt_scheme import dose_symmetric_order, tilt_angles_deg

JUNK = -1  # label of junk particles


@dataclass
class ParticleSet:
    """Simulated particles and their truth.

    images : ParticleImages (N particles, box³ at ``images.pixel_size_a``)
    rotations : (N, 3, 3) true poses (reference -> particle); junk: random
    labels : (N,) int, species index (0, 1, ...) or JUNK
    maps : (S, B, B, B) truth maps of the species in the reference frame (excess potential, V)
    hinge_deg : (N,) float, the hinge angle of each particle (NaN where it does not apply)
    names : the species' names
    """

    images: ParticleImages
    rotations: np.ndarray
    labels: np.ndarray
    maps: np.ndarray
    hinge_deg: np.ndarray
    names: tuple[str, ...]


class TiltSeriesModel:
    """The acquisition of a simulator preset, for one particle at a time.

    Parameters
    ----------
    box_px : int
        Box of the particle images (even).
    preset : str
        Simulator preset whose pixel size, tilts, dose, CTF and ice are used.
    dose_scale : float
        Multiplies the dose per tilt (< 1: noisier than the preset).
    """

    def __init__(self, box_px: int, preset: str = "sta_test", *, dose_scale: float = 1.0):
        self.config: SimConfig = resolve_config(preset)
        c = self.config
        self.box_px, self.pixel_size_a = int(box_px), float(c.pixel_size_a)
        angles = tilt_angles_deg(c.tilt_min_deg, c.tilt_max_deg, c.tilt_step_deg)
        order = dose_symmetric_order(angles, c.dose_symmetric_group_size)
        self.tilts_deg = angles[order]  # acquisition order
        self.exposure_e_a2 = (np.arange(len(order)) + 0.5) * c.dose_per_tilt_e_a2
        self.rotations = np.stack([rotation_y(t) for t in self.tilts_deg])
        ice = c.thickness_a / np.cos(np.radians(self.tilts_deg))
        counts = (c.dose_per_tilt_e_a2 * dose_scale * c.pixel_size_a**2
                  * np.exp(-ice / c.ice_mean_free_path_a))
        self.noise_std = 1.0 / np.sqrt(counts)  # contrast units per pixel, per tilt
        self.signal_scale = 2.0 * interaction_constant_rad_per_v_a(c.voltage_kv) * c.pixel_size_a
        q = np.arange(self.box_px) - self.box_px // 2
        qy, qx = np.meshgrid(q, q, indexing="ij")
        self._inside = (qx**2 + qy**2) < (self.box_px // 2 - 1) ** 2
        self._q = np.stack([qx[self._inside], qy[self._inside], np.zeros(self._inside.sum())],
                           -1).astype(np.float32)

    def particle(self, grid: np.ndarray, rotation: np.ndarray, position_a: np.ndarray,
                 rng: np.random.Generator, *, signal: bool = True) -> tuple[np.ndarray, ...]:
        """(data_ft, weight) of one particle (rfftn layout, see ParticleImages).

        ``grid``: gridding.reference_grid of its potential map (V, box³); ``rotation`` its
        pose; ``position_a`` (3,) its place in the tomogram (Å from the centre, sets the
        defocus of each tilt).
        """
        box, c = self.box_px, self.config
        heights = (self.rotations @ np.asarray(position_a, dtype=float))[:, 2]
        ctf = {"defocus_u_a": c.defocus_a + heights + 0.5 * c.astigmatism_a,
               "defocus_v_a": c.defocus_a + heights - 0.5 * c.astigmatism_a,
               "astigmatism_angle_deg": np.zeros(len(heights)), "voltage_kv": c.voltage_kv,
               "spherical_aberration_mm": c.spherical_aberration_mm,
               "amplitude_contrast": c.amplitude_contrast}
        transfers = tilt_transfers(box, self.pixel_size_a, ctf, self.exposure_e_a2)
        slices = np.zeros((len(heights), box, box), dtype=np.complex64)
        if signal:
            poses = np.einsum("tij,jk->tik", self.rotations, rotation)
            values = gridding.sample_rotated(grid, poses, self._q, gridding_pad(grid, box))
            slices[:, self._inside] = values * self.signal_scale
        slices *= transfers
        noise = rng.standard_normal((len(heights), box, box)).astype(np.float32)
        noise *= self.noise_std[:, None, None].astype(np.float32)
        slices += scipy.fft.fftshift(scipy.fft.fft2(scipy.fft.ifftshift(noise, axes=(1, 2))),
                                     axes=(1, 2))
        data, weight, _ = insert_slices(slices, transfers, self.rotations)
        half = box // 2 + 1
        return to_rfft_data(data), np.ascontiguousarray(np.fft.ifftshift(weight)[:, :, :half])

    def random_position_a(self, rng: np.random.Generator) -> np.ndarray:
        """A place in the preset's tomogram (x, y inside the image, z inside the ice)."""
        c = self.config
        half = 0.4 * c.image_size_px * c.pixel_size_a
        return np.array([rng.uniform(-half, half), rng.uniform(-half, half),
                         rng.uniform(-0.4, 0.4) * c.thickness_a])


def gridding_pad(grid: np.ndarray, box_px: int) -> int:
    """Padding factor of a reference grid made for ``box_px``."""
    return grid.shape[0] // box_px


def species_map(name: str, box_px: int, pixel_size_a: float, contrast_v: float) -> np.ndarray:
    """Excess potential (V) of a template in a box³ grid, reference orientation."""
    template = load_template(name, pixel_size_a)
    rescaled = volumes.rescale_volume(template.density, template.pixel_size_a, pixel_size_a)
    return (contrast_v * volumes.crop_or_pad(rescaled, box_px)).astype(np.float32)


def hinged_map(base: np.ndarray, angle_deg: float, *, cut_fraction: float = 0.35,
               axis: str = "y") -> np.ndarray:
    """``base`` with its part beyond the plane x = x_cut turned by ``angle_deg`` about an axis
    along ``axis`` through that plane (a domain on a hinge). ``x_cut`` lies at
    ``cut_fraction`` of the density's extent along x from its +x end."""
    from scipy import ndimage

    box = base.shape[0]
    occupied = np.flatnonzero(base.max(axis=(0, 1)) > 0.05 * base.max())
    x_cut = occupied[-1] - cut_fraction * (occupied[-1] - occupied[0])
    x = np.arange(box)[None, None, :]
    soft = np.clip((x - x_cut) / 2.0 + 0.5, 0.0, 1.0).astype(np.float32)  # 2-px ramp
    domain, body = base * soft, base * (1 - soft)
    vector = {"x": (1.0, 0, 0), "y": (0, 1.0, 0), "z": (0, 0, 1.0)}[axis]
    rotation = rotations_from_vectors_deg(np.asarray(vector) * angle_deg)[0]
    # output voxel p (z, y, x) reads the domain at hinge + Rᵀ (p − hinge)
    flip = np.eye(3)[::-1]
    matrix = flip @ rotation.T @ flip
    hinge = np.array([box // 2, box // 2, x_cut], dtype=float)  # z, y, x
    turned = ndimage.affine_transform(domain, matrix, offset=hinge - matrix @ hinge, order=3,
                                      mode="constant")
    return (body + turned).astype(np.float32)


def _shift(volume: np.ndarray, shift_xyz_px: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.shift(volume, np.asarray(shift_xyz_px)[::-1], order=3, mode="constant")


def simulate_particles(maps: np.ndarray, labels: np.ndarray, *, preset: str = "sta_test",
                       dose_scale: float = 1.0, hinge_deg: np.ndarray | None = None,
                       per_particle_maps: list[np.ndarray] | None = None,
                       rotations: np.ndarray | None = None,
                       names: tuple[str, ...] = (), seed: int = 0) -> ParticleSet:
    """Particle images of species ``maps`` (S, B, B, B) for ``labels`` (N,) at random poses.

    Parameters
    ----------
    maps : (S, B, B, B) float32, excess potential in V, reference frame
    labels : (N,) int, species of each particle, or JUNK (a random box of the tomogram)
    preset, dose_scale : the acquisition (TiltSeriesModel)
    hinge_deg, per_particle_maps : optional per-particle maps (continuous heterogeneity)
        replacing the species map, and the parameter that made them.
    rotations : (N, 3, 3), optional poses (default: uniform at random)
    seed : int
    """
    rng = np.random.default_rng(seed)
    maps = np.asarray(maps, dtype=np.float32)
    labels = np.asarray(labels, dtype=int)
    box = maps.shape[1]
    model = TiltSeriesModel(box, preset, dose_scale=dose_scale)
    poses = random_rotations(len(labels), rng)
    rotations = poses if rotations is None else np.asarray(rotations, dtype=float)
    grids = [gridding.reference_grid(m) for m in maps]
    shape = (len(labels), box, box, box // 2 + 1)
    data, weight = np.empty(shape, np.complex64), np.empty(shape, np.float32)
    for i, label in enumerate(labels):
        position = model.random_position_a(rng)
        if label == JUNK:
            grid = _junk_grid(maps, rng)
            data[i], weight[i] = model.particle(grid, rotations[i], position, rng,
                                                signal=grid is not None)
            continue
        grid = grids[label] if per_particle_maps is None else gridding.reference_grid(
            per_particle_maps[i])
        data[i], weight[i] = model.particle(grid, rotations[i], position, rng)
    hinge = np.full(len(labels), np.nan) if hinge_deg is None else np.asarray(hinge_deg, float)
    images = ParticleImages(data, weight, None, model.pixel_size_a)
    return ParticleSet(images, rotations, labels, maps, hinge, tuple(names))


def _junk_grid(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A random box of the tomogram: half the time empty ice (None), else a species cut by the
    box edge (its centre 0.45–0.7 boxes away from the box centre)."""
    if rng.random() < 0.5:
        return None
    box = maps.shape[1]
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    offset = direction * rng.uniform(0.45, 0.7) * box
    species = maps[rng.integers(len(maps))]
    moved = _shift(species, offset)
    return gridding.reference_grid(moved)


def two_species(count: int, *, names: tuple[str, str] = ("3j9i", "6pxm"),
                fraction_first: float = 0.5, box_px: int = 32, preset: str = "sta_test",
                junk_fraction: float = 0.0, dose_scale: float = 1.0,
                rotations: np.ndarray | None = None, seed: int = 0) -> ParticleSet:
    """A discrete mixture: ``fraction_first`` of the true particles are ``names[0]``, the rest
    ``names[1]``; ``junk_fraction`` of all boxes are junk. Order is shuffled; poses uniform
    at random unless ``rotations`` (N, 3, 3) are given."""
    config = resolve_config(preset)
    maps = np.stack([species_map(n, box_px, config.pixel_size_a, config.protein_contrast_v)
                     for n in names])
    labels = _labels(count, [fraction_first, 1 - fraction_first], junk_fraction, seed)
    return simulate_particles(maps, labels, preset=preset, dose_scale=dose_scale, names=names,
                              rotations=rotations, seed=seed)


def hinge_motion(count: int, *, name: str = "3j9i", max_angle_deg: float = 20.0,
                 box_px: int = 32, preset: str = "sta_test", dose_scale: float = 1.0,
                 seed: int = 0) -> ParticleSet:
    """One complex whose end domain turns on a hinge by an angle drawn uniformly in
    [0, ``max_angle_deg``]. ``maps`` holds the two ends (0° and ``max_angle_deg``)."""
    config = resolve_config(preset)
    base = species_map(name, box_px, config.pixel_size_a, config.protein_contrast_v)
    angles = np.random.default_rng([seed, 7]).uniform(0.0, max_angle_deg, count)
    per_particle = [hinged_map(base, a) for a in angles]
    ends = np.stack([hinged_map(base, 0.0), hinged_map(base, max_angle_deg)])
    return simulate_particles(ends, np.zeros(count, dtype=int), preset=preset,
                              dose_scale=dose_scale, hinge_deg=angles,
                              per_particle_maps=per_particle, names=(name,), seed=seed)


def _labels(count: int, fractions: list[float], junk_fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 3])
    junk = int(round(junk_fraction * count))
    true = count - junk
    sizes = np.floor(np.asarray(fractions) * true + 0.5).astype(int)
    sizes[-1] = true - sizes[:-1].sum()
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)] + [np.full(junk, JUNK)])
    return rng.permutation(labels).astype(int)


def rotations_viewing_along(directions: np.ndarray, spread_deg: float, count: int,
                            rng: np.random.Generator) -> np.ndarray:
    """``count`` poses whose beam direction in the reference frame (Rᵀ ẑ, the third row of R)
    lies within ``spread_deg`` of one of ``directions`` (D, 3) (chosen in turn), with a
    uniform spin about the beam: particles seen from a few sides only."""
    directions = np.asarray(directions, dtype=float).reshape(-1, 3)
    out = np.empty((count, 3, 3))
    for i in range(count):
        axis = directions[i % len(directions)] / np.linalg.norm(directions[i % len(directions)])
        tilt = rotations_from_vectors_deg(rng.normal(size=3) * spread_deg / np.sqrt(3))[0]
        beam = tilt @ axis
        helper = np.eye(3)[np.argmin(np.abs(beam))]
        first = np.cross(helper, beam)
        first /= np.linalg.norm(first)
        base = np.stack([first, np.cross(beam, first), beam])  # rows: R with third row beam
        spin = rng.uniform(0, 360)
        c, s = np.cos(np.radians(spin)), np.sin(np.radians(spin))
        out[i] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ base
    return out


def write_subtomograms(folder, particles: ParticleSet, *, rotations: np.ndarray | None = None,
                       field_a: float = 3000.0, seed: int = 0):
    """Write ``particles`` as CTF-premultiplied subtomograms (box, and √ of the CTF² weight as
    RELION's rlnCtfImage) with a RELION 3.1 particles STAR (premultiplied), spread over a
    field ``field_a`` wide so half sets split by region. Particle i is named ``p{i:04d}`` and
    carries ``rotations[i]`` (default: its true pose). Returns the STAR's path."""
    from pathlib import Path

    from tomoweave.algorithms.fourier import centred_grid_from_rfft
    from tomoweave.formats.mrc import write_mrc
    from tomoweave.formats.relion_subtomograms import write_relion31_subtomograms
    from tomoweave.model import Particle, Subtomogram

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = particles.images
    poses = particles.rotations if rotations is None else np.asarray(rotations, dtype=float)
    rng = np.random.default_rng([seed, 11])
    count, box, pixel = len(images), images.box_px, images.pixel_size_a
    positions = np.column_stack([rng.uniform(-field_a / 2, field_a / 2, (count, 2)),
                                 rng.uniform(-200.0, 200.0, count)])
    items = []
    for i in range(count):
        name = f"p{i:04d}"
        volume = scipy.fft.irfftn(images.data_ft[i], (box,) * 3).astype(np.float32)
        write_mrc(folder / f"{name}.mrc", volume, pixel)
        # RELION squares rlnCtfImage also for premultiplied data: the weight Σ h² travels
        # as its square root (see protocols/import_subtomograms.py)
        root = np.sqrt(np.maximum(images.weight[i], 0.0))
        write_mrc(folder / f"{name}_weight.mrc", centred_grid_from_rfft(root, box), pixel)
        particle = Particle(name=name, tomogram="TS_01", position_a=tuple(positions[i]),
                            rotation=poses[i].tolist())
        items.append(Subtomogram(name=name, particle=particle, path=f"{name}.mrc",
                                 weight_path=f"{name}_weight.mrc", ctf_premultiplied=True,
                                 pixel_size_a=pixel, box_size_px=box))
    return write_relion31_subtomograms(folder / "particles.star", items,
                                       lambda stored: folder / stored)
