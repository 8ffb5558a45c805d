"""The specimen: a slab of ice holding particles, gold beads and vesicles.

The volume stores the *excess* potential over ice, in volts, on the tomogram grid ([z, y, x],
centre at N // 2): what a perfect reconstruction would show once its mean is removed. The ice
itself is uniform and handled analytically by the imaging model (mean intensity per tilt), so the
field of view never shows the edges of a finite block of ice.

Objects are placed one after the other at random positions, each rejected when it would overlap
what is already there (bounding spheres, vesicle shells counted with their thickness).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from tomoweave.geometry.rotations import random_rotations, rotation_z
from tomoweave.sim.config import SimConfig
from tomoweave.sim.templates import add_particle, load_template

MEMBRANE_HALF_WIDTH_A = 25.0  # half thickness of a bilayer, headgroup to headgroup ≈ 40 Å
_MAX_TRIES = 4000
EMPTY_BELOW_V = 0.01


@dataclass
class PlacedParticle:
    template: str
    position_a: np.ndarray
    rotation: np.ndarray
    radius_a: float
    membrane_id: int | None = None
    normal: np.ndarray | None = None


@dataclass
class Vesicle:
    centre_a: np.ndarray
    radii_a: np.ndarray  # ellipsoid semi-axes along x, y, z


@dataclass
class Specimen:
    volume_v: np.ndarray
    pixel_size_a: float
    thickness_a: float
    particles: list[PlacedParticle] = field(default_factory=list)
    beads_a: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    bead_radius_a: float = 50.0
    vesicles: list[Vesicle] = field(default_factory=list)


def build_specimen(config: SimConfig, rng: np.random.Generator) -> Specimen:
    """Place every object of ``config`` and draw the excess-potential volume."""
    pixel_size_a = config.pixel_size_a
    size = config.image_size_px
    depth = max(8, int(np.ceil(config.thickness_a / pixel_size_a)) + 4)
    shape_zyx = (depth, size, size)
    half_box_a = np.array([size // 2, size // 2, depth // 2], dtype=float) * pixel_size_a
    limits_a = np.array([half_box_a[0], half_box_a[1], config.thickness_a / 2])
    placer = _Placer(limits_a, rng)

    vesicles = []
    if config.membranes_on:
        for _ in range(config.n_vesicles):
            vesicle = placer.place_vesicle(config.vesicle_radius_a)
            if vesicle is not None:
                vesicles.append(vesicle)
    membrane_proteins = (_place_membrane_proteins(config, placer, vesicles, rng)
                         if config.particles_on and vesicles else [])
    bead_radius_a = config.bead_diameter_a / 2
    beads = []
    if config.beads_on:
        for _ in range(config.n_beads):
            position = placer.place_sphere(bead_radius_a, margin_a=2 * bead_radius_a)
            if position is not None:
                beads.append(position)
    particles = _place_particles(config, placer, rng) if config.particles_on else []
    particles = membrane_proteins + particles

    volume = np.zeros(shape_zyx, dtype=np.float32)
    for vesicle in vesicles:
        _add_membrane(volume, pixel_size_a, vesicle, config.membrane_contrast_v)
    for bead in beads:
        add_sphere(volume, pixel_size_a, bead, bead_radius_a, config.bead_contrast_v)
    for particle in particles:
        template = load_template(particle.template, pixel_size_a)
        add_particle(volume, pixel_size_a, template, particle.position_a, particle.rotation,
                     config.protein_contrast_v)
    # interpolation tails below 0.01 V do not show in any image but would make the projector
    # visit nearly every voxel: cut them so that empty space is really empty
    volume[np.abs(volume) < EMPTY_BELOW_V] = 0.0
    return Specimen(volume, pixel_size_a, config.thickness_a, particles,
                    np.array(beads).reshape(-1, 3), bead_radius_a, vesicles)


def _place_particles(config: SimConfig, placer: _Placer, rng: np.random.Generator):
    particles = []
    # big particles first: they are the hardest to fit
    names = sorted((n for n, c in config.particles.items() if c > 0),
                   key=lambda n: -load_template(n, config.pixel_size_a).radius_a)
    for name in names:
        template = load_template(name, config.pixel_size_a)
        rotations = random_rotations(config.particles[name], rng)
        for rotation in rotations:
            position = placer.place_sphere(template.radius_a)
            if position is not None:
                particles.append(PlacedParticle(name, position, rotation, template.radius_a))
    return particles


def _place_membrane_proteins(config: SimConfig, placer: _Placer, vesicles: list[Vesicle],
                             rng: np.random.Generator) -> list[PlacedParticle]:
    """Proteins centred on a membrane, their reference Z axis along the outward normal."""
    placed = []
    for name, count in sorted(config.membrane_proteins.items()):
        template = load_template(name, config.pixel_size_a)
        for _ in range(count):
            membrane_id = int(rng.integers(len(vesicles)))
            spot = placer.place_on_membrane(vesicles[membrane_id], template.radius_a)
            if spot is None:
                continue
            position, normal = spot
            rotation = rotation_z_to(normal) @ rotation_z(rng.uniform(0, 360))
            placed.append(PlacedParticle(name, position, rotation, template.radius_a,
                                         membrane_id, normal))
    return placed


def rotation_z_to(direction: np.ndarray) -> np.ndarray:
    """A rotation taking the Z axis onto the unit vector ``direction`` (shortest arc)."""
    direction = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    axis = np.cross([0.0, 0.0, 1.0], direction)
    sine, cosine = np.linalg.norm(axis), direction[2]
    if sine < 1e-9:
        return np.eye(3) if cosine > 0 else np.diag([1.0, -1.0, -1.0])
    axis /= sine
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + sine * cross + (1 - cosine) * cross @ cross


class _Placer:
    """Random sequential placement of spheres and vesicle shells without overlap."""

    def __init__(self, limits_a: np.ndarray, rng: np.random.Generator):
        self.limits_a = limits_a  # half extents (x, y, z) that objects must stay inside
        self.rng = rng
        self.spheres: list[tuple[np.ndarray, float]] = []
        self.shells: list[Vesicle] = []

    def place_sphere(self, radius_a: float, margin_a: float = 0.0) -> np.ndarray | None:
        room = self.limits_a - radius_a - np.array([margin_a, margin_a, 0.0])
        if np.any(room <= 0):
            return None
        for _ in range(_MAX_TRIES):
            position = self.rng.uniform(-room, room)
            if self._free(position, radius_a):
                self.spheres.append((position, radius_a))
                return position
        return None

    def place_vesicle(self, radius_range_a: tuple[float, float]) -> Vesicle | None:
        for _ in range(_MAX_TRIES // 10):
            radii = self.rng.uniform(radius_range_a[0], radius_range_a[1], size=3)
            radii[2] = min(radii[2], self.limits_a[2] - MEMBRANE_HALF_WIDTH_A - 10.0)
            outer = radii + MEMBRANE_HALF_WIDTH_A
            room = self.limits_a - outer
            if np.any(room < 0) or radii[2] < 0.5 * radius_range_a[0]:
                continue
            centre = self.rng.uniform(-room, room)
            clear_of_spheres = all(np.linalg.norm(centre - s[0]) > outer.max() + s[1]
                                   for s in self.spheres)
            clear_of_shells = all(
                np.linalg.norm(centre - v.centre_a) > outer.max() + v.radii_a.max()
                + MEMBRANE_HALF_WIDTH_A for v in self.shells)
            if clear_of_spheres and clear_of_shells:
                vesicle = Vesicle(centre, radii)
                self.shells.append(vesicle)
                return vesicle
        return None

    def place_on_membrane(self, vesicle: Vesicle, radius_a: float):
        """A free spot on ``vesicle``'s surface inside the ice: (position, outward normal)."""
        for _ in range(_MAX_TRIES // 10):
            direction = self.rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            position = vesicle.centre_a + direction / np.linalg.norm(direction / vesicle.radii_a)
            normal = (position - vesicle.centre_a) / vesicle.radii_a**2
            normal /= np.linalg.norm(normal)
            inside = np.all(np.abs(position) + radius_a <= self.limits_a)
            clear = all(np.sum((position - c) ** 2) >= (radius_a + r) ** 2 for c, r in self.spheres)
            if inside and clear:
                self.spheres.append((position, radius_a))
                return position, normal
        return None

    def _free(self, position: np.ndarray, radius_a: float) -> bool:
        for centre, other in self.spheres:
            if np.sum((position - centre) ** 2) < (radius_a + other) ** 2:
                return False
        for shell in self.shells:
            distance = abs(ellipsoid_distance_a(position[None], shell)[0])
            if distance < radius_a + MEMBRANE_HALF_WIDTH_A:
                return False
        return True


def ellipsoid_distance_a(points_a: np.ndarray, vesicle: Vesicle) -> np.ndarray:
    """Approximate signed distance (Å, positive outside) of points (N, 3) to an ellipsoid."""
    scaled = (points_a - vesicle.centre_a) / vesicle.radii_a
    norm = np.linalg.norm(scaled, axis=-1)
    gradient = np.linalg.norm(scaled / vesicle.radii_a, axis=-1) / np.maximum(norm, 1e-9)
    return (norm - 1.0) / np.maximum(gradient, 1e-12)


def _box(volume: np.ndarray, pixel_size_a: float, centre_a: np.ndarray, half_a: np.ndarray):
    """Slices of ``volume`` around ``centre_a`` and the Å coordinates (x, y, z) of their voxels."""
    shape = np.array(volume.shape[::-1])
    centre_px = centre_a / pixel_size_a + shape // 2
    low = np.maximum(np.floor(centre_px - half_a / pixel_size_a).astype(int) - 1, 0)
    high = np.minimum(np.ceil(centre_px + half_a / pixel_size_a).astype(int) + 2, shape)
    axes = [(np.arange(low[i], high[i]) - shape[i] // 2) * pixel_size_a for i in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    slices = tuple(slice(low[i], high[i]) for i in (2, 1, 0))
    return slices, np.stack([xx, yy, zz], -1)


def add_sphere(volume: np.ndarray, pixel_size_a: float, centre_a: np.ndarray,
                radius_a: float, contrast_v: float) -> None:
    """A solid sphere whose edge is smoothed over about one voxel (band-limited, no aliasing)."""
    slices, points = _box(volume, pixel_size_a, centre_a, np.full(3, radius_a + 2 * pixel_size_a))
    distance = np.linalg.norm(points - centre_a, axis=-1) - radius_a
    edge_a = 0.5 * pixel_size_a
    volume[slices] += (contrast_v * 0.5 * special.erfc(distance / edge_a)).astype(np.float32)


def bilayer_profile(distance_a: np.ndarray, pixel_size_a: float) -> np.ndarray:
    """Bilayer across a membrane: two dense headgroup layers 40 Å apart, a lighter core.

    Widths include a Gaussian of about half a voxel so the profile is sampled without aliasing.
    """
    blur = 0.5 * pixel_size_a
    head = np.sqrt(5.0**2 + blur**2)
    core = np.sqrt(8.0**2 + blur**2)
    heads = np.exp(-0.5 * ((distance_a - 20.0) / head) ** 2) + np.exp(
        -0.5 * ((distance_a + 20.0) / head) ** 2)
    return (5.0 / head) * heads - 0.4 * (8.0 / core) * np.exp(-0.5 * (distance_a / core) ** 2)


def _add_membrane(volume: np.ndarray, pixel_size_a: float, vesicle: Vesicle,
                  contrast_v: float) -> None:
    half = vesicle.radii_a + MEMBRANE_HALF_WIDTH_A + 2 * pixel_size_a
    slices, points = _box(volume, pixel_size_a, vesicle.centre_a, half)
    distance = ellipsoid_distance_a(points.reshape(-1, 3), vesicle).reshape(points.shape[:-1])
    near = np.abs(distance) < MEMBRANE_HALF_WIDTH_A + 3 * pixel_size_a
    values = np.zeros(distance.shape, dtype=np.float32)
    values[near] = contrast_v * bilayer_profile(distance[near], pixel_size_a)
    volume[slices] += values
