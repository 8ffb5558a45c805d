"""Template-matching scenes built without the physics simulator, for testing pickers.

Copies of real density maps (``shared/data/templates_10A``) at random positions and
orientations in a volume, distractors (other maps) and small crowders around them, optionally
gold beads and a vesicle; then what a reconstructed tomogram does to them, applied in Fourier
space: a missing wedge *sampled* from the tilt planes (with the Crowther gaps at high
frequency), a CTF, a B-factor envelope, and noise coloured like a weighted back-projection's
(power rising with frequency) at a chosen signal-to-noise ratio.

On purpose this module shares no numerics with :mod:`tomoweave.algorithms` (wedge, CTF,
rotation, rescaling are written here again with scipy): a sign or convention error in the
matcher then shows as a failed test instead of cancelling out. The conventions are the
project's: volumes [z, y, x] float32, positions Å from the centre (voxel = Å / pixel + N // 2),
rotations 3×3 active matrices in (x, y, z) turning the reference into the particle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomoweave.formats.mrc import read_mrc
from tomoweave.sim.templates import template_dir

_ELECTRON_WAVELENGTH_300KV_A = 0.019687  # relativistic, 300 kV


@dataclass(frozen=True)
class SceneSpec:
    """What a scene holds and how it is imaged. Counts are per volume; lengths Å; angles °."""

    target: str = "4v4r"
    n_targets: int = 30
    distractors: dict[str, int] = field(default_factory=lambda: {"3j9i": 15, "1bxn": 15})
    crowders: dict[str, int] = field(default_factory=lambda: {"3qm1": 60})
    shape_zyx: tuple[int, int, int] = (100, 200, 200)
    pixel_size_a: float = 20.0
    slab_fraction: float = 0.8  # the ice: central fraction of the volume's depth
    tilt_range_deg: tuple[float, float] = (-60.0, 60.0)
    tilt_step_deg: float = 3.0
    defocus_a: float = 40000.0  # underfocus positive
    amplitude_contrast: float = 0.07
    spherical_aberration_mm: float = 2.7
    phase_flipped: bool = False
    bfactor_a2: float = 400.0
    snr: float = 0.1  # signal variance inside the targets over the noise variance, after filters
    n_gold: int = 0
    gold_diameter_a: float = 100.0
    n_vesicles: int = 0
    seed: int = 0


@dataclass
class Scene:
    """The tomogram and its truth."""

    tomogram: np.ndarray  # [z, y, x] float32
    spec: SceneSpec
    positions_a: np.ndarray  # (N, 3) targets, x y z Å from the centre
    rotations: np.ndarray  # (N, 3, 3) targets
    other_positions_a: np.ndarray  # (M, 3) distractors, crowders, gold
    other_names: list[str]
    noise_sigma: float

    @property
    def pixel_size_a(self) -> float:
        return self.spec.pixel_size_a


def load_map(name: str, pixel_size_a: float, folder: Path | None = None) -> np.ndarray:
    """``name``.mrc resampled to ``pixel_size_a`` (anti-aliased), peak 1, centre at N // 2."""
    density, source_a = read_mrc(Path(folder or template_dir()) / f"{name}.mrc")
    density = np.clip(np.asarray(density, dtype=np.float64), 0.0, None)
    factor = (source_a or 10.0) / pixel_size_a
    if factor < 1:  # Gaussian anti-alias at the new Nyquist before sampling
        density = ndimage.gaussian_filter(density, 0.5 / factor)
    size = max(4, int(round(density.shape[0] * factor)))
    scale = 1.0 / factor
    offset = density.shape[0] // 2 - scale * (size // 2)
    out = ndimage.affine_transform(density, np.full(3, scale), offset=offset,
                                   output_shape=(size,) * 3, order=3, mode="constant")
    return (out / out.max()).astype(np.float32)


def _support_radius_px(density: np.ndarray, level: float = 0.1) -> float:
    grid = np.indices(density.shape) - density.shape[0] // 2
    radius = np.sqrt((grid**2).sum(axis=0))
    return float(radius[density > level].max()) if np.any(density > level) else 1.0


def _render(volume: np.ndarray, density: np.ndarray, centre_zyx: np.ndarray,
            rotation: np.ndarray) -> None:
    """Add the map rotated by ``rotation`` (active, x y z) with its centre at ``centre_zyx``."""
    box = density.shape[0]
    flip = np.eye(3)[::-1]
    inverse_zyx = flip @ rotation.T @ flip  # output voxel -> map voxel
    lo = np.floor(centre_zyx).astype(int) - box // 2
    fraction = centre_zyx - np.floor(centre_zyx)
    c = np.full(3, box // 2, dtype=float)
    # output index o of the box holds the map at inverse (o - c - fraction) + c
    offset = c - inverse_zyx @ (c + fraction)
    patch = ndimage.affine_transform(density, inverse_zyx, offset=offset, order=3,
                                     mode="constant")
    target, source = [], []
    for start, size in zip(lo, volume.shape, strict=True):
        s0, s1 = max(0, start), min(size, start + box)
        target.append(slice(s0, s1))
        source.append(slice(s0 - start, s1 - start))
    volume[tuple(target)] += patch[tuple(source)]


def _frequencies(shape_zyx):
    kz = np.fft.fftfreq(shape_zyx[0])[:, None, None]
    ky = np.fft.fftfreq(shape_zyx[1])[None, :, None]
    kx = np.fft.rfftfreq(shape_zyx[2])[None, None, :]
    return kz, ky, kx


def sampled_wedge(shape_zyx, tilts_deg: np.ndarray) -> np.ndarray:
    """Fourier coverage of a tilt series: each tilt a central plane one voxel thick, summed.

    The plane of the tilt ``t`` (specimen turned by Ry(t), projected along z) holds the
    frequencies with kz cos t = kx sin t; its weight falls linearly to 0 at one voxel of the
    largest axis from it. Overlaps (low frequencies) saturate at 1, as a weighted
    back-projection normalises them; between planes at high frequency gaps remain.
    """
    kz, _, kx = _frequencies(shape_zyx)
    thickness = 1.0 / max(shape_zyx)
    coverage = np.zeros(np.broadcast_shapes(kz.shape, kx.shape), dtype=np.float64)
    for t in np.radians(tilts_deg):
        distance = np.abs(kz * np.cos(t) - kx * np.sin(t))
        coverage += np.clip(1.0 - distance / thickness, 0.0, None)
    return np.minimum(coverage, 1.0)  # [kz, 1, kx]: the same for every ky


def _ctf(shape_zyx, spec: SceneSpec) -> np.ndarray:
    kz, ky, kx = _frequencies(shape_zyx)
    k2 = (kz**2 + ky**2 + kx**2) / spec.pixel_size_a**2  # 1/Å²
    wavelength = _ELECTRON_WAVELENGTH_300KV_A
    chi = (np.pi * wavelength * spec.defocus_a * k2
           - 0.5 * np.pi * spec.spherical_aberration_mm * 1e7 * wavelength**3 * k2**2)
    w = spec.amplitude_contrast
    ctf = -(np.sqrt(1 - w * w) * np.sin(chi) + w * np.cos(chi))
    envelope = np.exp(-0.25 * spec.bfactor_a2 * k2)
    return (-np.abs(ctf) if spec.phase_flipped else ctf) * envelope


def _place(rng, shape_zyx, radii_px, slab_fraction, existing) -> list[np.ndarray]:
    """Random centres (z y x voxels) inside the slab, not overlapping each other or ``existing``."""
    depth = shape_zyx[0]
    slab = (0.5 * (1 - slab_fraction) * depth, 0.5 * (1 + slab_fraction) * depth)
    placed = list(existing)
    new = []
    for radius in radii_px:
        for _ in range(2000):
            low = np.array([slab[0] + radius, radius, radius])
            high = np.array([slab[1] - radius, shape_zyx[1] - radius, shape_zyx[2] - radius])
            if np.any(high <= low):
                low, high = np.array([radius] * 3), np.array(shape_zyx) - radius
            centre = rng.uniform(low, high)
            if all(np.linalg.norm(centre - c) >= 0.9 * (radius + r) for c, r in placed):
                placed.append((centre, radius))
                new.append(centre)
                break
        else:
            raise ValueError(f"scene too crowded: no room for a particle of radius {radius:.1f} px")
    return new


def make_scene(spec: SceneSpec, folder: Path | None = None) -> Scene:
    """Build the tomogram of ``spec`` (deterministic for its seed)."""
    rng = np.random.default_rng(spec.seed)
    shape = tuple(spec.shape_zyx)
    signal = np.zeros(shape, dtype=np.float32)
    support = np.zeros(shape, dtype=np.float32)  # targets only, for the SNR
    placed: list[tuple[np.ndarray, float]] = []
    groups = [(spec.target, spec.n_targets, True)]
    groups += [(name, count, False) for name, count in {**spec.distractors,
                                                        **spec.crowders}.items()]
    target_centres, target_rotations, others, other_names = [], [], [], []
    for name, count, is_target in groups:  # largest first would pack better; targets first
        density = load_map(name, spec.pixel_size_a, folder)
        radius = _support_radius_px(density)
        centres = _place(rng, shape, [radius] * count, spec.slab_fraction, placed)
        placed += [(c, radius) for c in centres]
        rotations = Rotation.random(len(centres), random_state=rng).as_matrix()
        for centre, rotation in zip(centres, rotations, strict=True):
            _render(signal, density, centre, rotation)
            if is_target:
                _render(support, (density > 0.1).astype(np.float32), centre, rotation)
        if is_target:
            target_centres, target_rotations = centres, rotations
        else:
            others += centres
            other_names += [name] * len(centres)
    if spec.n_gold:
        radius = 0.5 * spec.gold_diameter_a / spec.pixel_size_a
        centres = _place(rng, shape, [radius] * spec.n_gold, spec.slab_fraction, placed)
        placed += [(c, radius) for c in centres]
        grid = np.indices(shape, dtype=np.float32)
        for centre in centres:  # gold scatters ~10x more than protein
            distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
            signal += 10.0 * np.clip(radius + 0.5 - distance, 0, 1)
        others += centres
        other_names += ["gold"] * len(centres)
    for _ in range(spec.n_vesicles):
        _add_vesicle(signal, rng, spec)
    tilts = np.arange(spec.tilt_range_deg[0], spec.tilt_range_deg[1] + 1e-6, spec.tilt_step_deg)
    wedge = sampled_wedge(shape, tilts)
    transfer = (_ctf(shape, spec) * wedge).astype(np.float32)
    imaged = scipy.fft.irfftn(scipy.fft.rfftn(signal, workers=-1) * transfer, s=shape,
                              workers=-1).astype(np.float32)
    inside = support > 0.5
    signal_var = float(imaged[inside].var()) if inside.any() else float(imaged.var())
    noise = _wbp_noise(shape, wedge, rng)
    noise_sigma = float(np.sqrt(signal_var / spec.snr))
    tomogram = imaged + noise_sigma * noise
    centre = np.array(shape) // 2
    to_a = lambda zyx: ((np.asarray(zyx).reshape(-1, 3) - centre)[:, ::-1]  # noqa: E731
                        * spec.pixel_size_a)
    return Scene(tomogram.astype(np.float32), spec, to_a(target_centres),
                 np.asarray(target_rotations).reshape(-1, 3, 3), to_a(others), other_names,
                 noise_sigma)


def _wbp_noise(shape, wedge: np.ndarray, rng) -> np.ndarray:
    """Unit-variance noise with a weighted back-projection's spectrum: power ∝ |k| in the wedge.

    Each tilt adds independent noise on its plane and the ramp filter weights it by |k|; a
    small white floor stands for what the reconstruction's interpolation spreads everywhere.
    """
    kz, ky, kx = _frequencies(shape)
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    amplitude = np.sqrt(0.05 + wedge * radius / 0.5).astype(np.float32)
    white = rng.standard_normal(shape, dtype=np.float32)
    noise = scipy.fft.irfftn(scipy.fft.rfftn(white, workers=-1) * amplitude, s=shape, workers=-1)
    return (noise / noise.std()).astype(np.float32)


def _add_vesicle(signal: np.ndarray, rng, spec: SceneSpec) -> None:
    """A lipid bilayer sphere (two leaflets 40 Å apart) somewhere in the slab."""
    shape = signal.shape
    radius_px = rng.uniform(250, 400) / spec.pixel_size_a
    centre = np.array([shape[0] / 2, rng.uniform(0, shape[1]), rng.uniform(0, shape[2])])
    grid = np.indices(shape, dtype=np.float32)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    half = 20.0 / spec.pixel_size_a
    width = max(0.6, 10.0 / spec.pixel_size_a)
    for leaflet in (radius_px - half, radius_px + half):
        signal += 0.8 * np.exp(-0.5 * ((distance - leaflet) / width) ** 2).astype(np.float32)
