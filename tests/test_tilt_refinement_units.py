"""Per-particle per-tilt refinement (issue 17), the pieces on exact synthetic inputs: the
correlation windows find a planted sub-pixel displacement, the geometry fit recovers planted
alignment changes from exact displacements, the planted-error helper deforms images by the
field it reports."""

from __future__ import annotations

import numpy as np

from tomoweave.algorithms.tilt_refinement import shifts
from tomoweave.algorithms.tilt_refinement.geometry import TiltGeometry, fit_geometry


def _band_limited_spectrum(box: int, rng) -> np.ndarray:
    q = np.arange(box) - box // 2
    radius = np.hypot(q[None, :], q[:, None])
    spectrum = (rng.normal(size=(box, box)) + 1j * rng.normal(size=(box, box)))
    return spectrum * (radius <= box // 3)


def test_correlation_window_finds_subpixel_displacement():
    rng = np.random.default_rng(0)
    box = 32
    model = _band_limited_spectrum(box, rng)
    q = np.arange(box) - box // 2
    planted = np.array([[1.3, -0.7], [-2.45, 0.2], [0.05, 1.85]])
    products = []
    for shift in planted:  # content moved by +shift: X = M e^{-2πi q·s / B}
        ramp = np.exp(-2j * np.pi * (q[None, :] * shift[0] + q[:, None] * shift[1]) / box)
        products.append(model * ramp * np.conj(model))
    offsets = shifts.window_offsets_px(3.0, 0.25)
    windows = shifts.correlation_windows(np.array(products), box, offsets)
    peaks = shifts.window_peaks(windows, offsets)
    # a parabola through samples 0.25 px apart of a peak ~1 px wide errs by < 0.02 px
    assert np.max(np.abs(peaks.shift_px - planted)) < 0.03
    assert np.all(np.linalg.eigvalsh(peaks.curvature) > 0)
    # the search radius confines the maximum
    near = shifts.window_peaks(windows, offsets, 0.5, around_px=np.zeros(2))
    assert np.all(np.hypot(*near.shift_px.T) <= 0.5 + 0.25)


def _geometry(count: int) -> TiltGeometry:
    tilts = np.linspace(-60, 60, count)
    return TiltGeometry(y_tilt_deg=tilts, x_tilt_deg=np.zeros(count),
                        z_rot_deg=np.full(count, 85.0), shift_x_a=np.zeros(count),
                        shift_y_a=np.zeros(count), magnification=np.ones(count),
                        field_half_size_a=500.0, order=2)


def test_geometry_fit_recovers_planted_changes():
    rng = np.random.default_rng(1)
    count = 11
    estimate = _geometry(count)
    truth = estimate.copy()
    truth.shift_x_a += rng.normal(0, 6, count)
    truth.shift_y_a += rng.normal(0, 6, count)
    truth.z_rot_deg += rng.normal(0, 0.3, count)
    truth.magnification += rng.normal(0, 0.003, count)
    truth.y_tilt_deg += 0.5
    truth.deformation_a[:, :, 2:] = rng.normal(0, 3, (count, 2, 3))
    positions = np.column_stack([rng.uniform(-450, 450, (200, 2)), rng.uniform(-200, 200, 200)])
    displacements = truth.project(positions) - estimate.project(positions)
    information = np.broadcast_to(np.eye(2) * 1e4, (200, count, 2, 2))  # 0.01 Å precision
    fitted, fit = fit_geometry(estimate, positions, displacements, information,
                               deformation_sigma_a=50.0)
    fitted, fit2 = fit_geometry(fitted, positions, truth.project(positions)
                                - fitted.project(positions), information,
                                deformation_sigma_a=50.0)
    error = np.linalg.norm(fitted.project(positions) - truth.project(positions), axis=-1)
    # exact data: only the linearisation of the rotations remains after two steps
    assert error.max() < 0.05
    assert abs(fit.tilt_offset_deg + fit2.tilt_offset_deg - 0.5) < 0.01
    assert np.max(np.abs(fitted.shift_x_a - truth.shift_x_a)) < 0.1


def test_geometry_fit_ignores_unmeasured_particles():
    estimate = _geometry(5)
    positions = np.array([[100.0, 50.0, 0.0], [-200.0, 80.0, 30.0]])
    displacements = np.ones((2, 5, 2)) * 3.0
    information = np.zeros((2, 5, 2, 2))
    fitted, fit = fit_geometry(estimate, positions, displacements, information)
    assert np.allclose(fit.changes, 0.0) and fit.tilt_offset_deg == 0.0


def test_planted_deformation_moves_image_content_by_the_field():
    from tomoweave.sim.residual_errors import ResidualErrors

    geometry = _geometry(1)
    geometry.deformation_a[0, :, 2:] = [[16.0, -8.0, 10.0], [-12.0, 6.0, 8.0]]  # Å
    errors = ResidualErrors(geometry, geometry.copy(), None, None, pixel_size_a=10.0)
    size = 100
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    point_px = np.array([78.0, 31.0])
    blob = np.exp(-((xx - point_px[0]) ** 2 + (yy - point_px[1]) ** 2) / (2 * 2.0**2))
    moved = errors.deform(blob[None].astype(np.float32))[0]
    centroid = np.array([(moved * xx).sum(), (moved * yy).sum()]) / moved.sum()
    expected = geometry.deformation_at(0, ((point_px - size // 2) * 10.0)[None])[0] / 10.0
    assert np.linalg.norm(expected) > 0.5  # the field moves this point by more than half a px
    assert np.allclose(centroid - point_px, expected, atol=0.05)


def _synthetic_comparison(rng, optics, particle_offsets_a, noise: float):
    """Patches X = h(true CTF) S + noise of random slices S: the CTF refinement's model."""
    from tomoweave.algorithms.tilt_refinement.measure import Comparison
    from tomoweave.algorithms.tilt_refinement.patches import BandSetup

    setup = BandSetup(rng.normal(size=(32, 32, 32)).astype(np.float32), 4.0, 10.0)
    count, n_tilts, n = len(particle_offsets_a), len(optics.defocus_u_a), setup.mask.sum()
    heights = rng.uniform(-250, 250, (count, n_tilts))
    slices = (rng.normal(size=(count, n_tilts, n)) + 1j * rng.normal(size=(count, n_tilts, n)))
    slices = (slices / setup.frequency * 0.01).astype(np.complex64)  # falling spectrum
    patches = np.empty_like(slices)
    for p in range(count):
        h = setup.transfers(optics, heights[p], particle_offsets_a[p])
        patches[p] = h * slices[p] + noise * (rng.normal(size=(n_tilts, n))
                                              + 1j * rng.normal(size=(n_tilts, n)))
    weights = np.full((n_tilts, n), 1.0 / (2 * noise**2), dtype=np.float32)
    return Comparison(patches, slices, heights, weights, {1: setup}, np.ones(count, int))


def test_ctf_refinement_recovers_tilt_defoci_and_particle_offsets():
    from dataclasses import replace

    from tomoweave.algorithms.averaging.pseudo_subtomograms import TiltSeriesOptics
    from tomoweave.algorithms.tilt_refinement.ctf import refine_ctf

    rng = np.random.default_rng(4)
    n_tilts = 6
    truth = TiltSeriesOptics(np.full(n_tilts, 40200.0), np.full(n_tilts, 39800.0),
                             np.full(n_tilts, 30.0), np.arange(n_tilts) * 3.0 + 1.5)
    offsets = rng.normal(0, 300, 30)
    comparison = _synthetic_comparison(rng, truth, offsets, noise=0.05)
    errors = rng.normal(0, 1000, n_tilts)
    start = replace(truth, defocus_u_a=truth.defocus_u_a + errors,
                    defocus_v_a=truth.defocus_v_a + errors)
    result = refine_ctf(comparison, start, particle_sigma_a=300.0)
    residual = 0.5 * (result.optics.defocus_u_a + result.optics.defocus_v_a) - 40000.0
    # the particles' offsets average out to ~300/√30 ≈ 55 Å in each tilt's defocus
    assert np.sqrt(np.mean(residual**2)) < 100.0 < np.sqrt(np.mean(errors**2)) / 5
    # the planted per-particle offsets (σ 300 Å) are found to well within their spread
    assert np.sqrt(np.mean((result.particle_defocus_a - offsets - np.mean(residual)) ** 2)) < 100
    assert np.allclose(result.tilt_scales, 1.0, atol=0.1) and result.determined
    # a band that stops before the first CTF zero (28 Å at 4 µm) cannot tell defoci apart
    from tomoweave.algorithms.tilt_refinement.patches import BandSetup

    low = BandSetup(np.zeros((32, 32, 32), np.float32), 4.0, 40.0)
    keep = low.mask[comparison.setup.mask]
    comparison.patches, comparison.slices = comparison.patches[..., keep], \
        comparison.slices[..., keep]
    comparison.weights, comparison.setups = comparison.weights[:, keep], {1: low}
    unchanged = refine_ctf(comparison, start)
    assert not unchanged.determined
    assert np.array_equal(unchanged.optics.defocus_u_a, start.defocus_u_a)


def test_smooth_motion_recovers_a_smooth_field_better_than_the_raw_measurements():
    from tomoweave.algorithms.tilt_refinement.motion import smooth_motion

    rng = np.random.default_rng(5)
    count, n_tilts = 80, 3
    positions = np.column_stack([rng.uniform(-500, 500, (count, 2)), np.zeros(count)])
    # a smooth motion field (wavelength ~ 2000 Å, amplitude 4 Å) per tilt
    phase = rng.uniform(0, 2 * np.pi, (n_tilts, 2))
    field = 4.0 * np.sin(positions[:, None, :2] * np.pi / 1000.0 + phase[None])
    noise_a = 3.0
    measured = field + rng.normal(0, noise_a, field.shape)
    information = np.broadcast_to(np.eye(2) / noise_a**2, (count, n_tilts, 2, 2))
    motion = smooth_motion(positions, measured, information, sigma_a=4.0, length_a=400.0)
    raw_error = np.sqrt(np.mean((measured - field) ** 2))
    smooth_error = np.sqrt(np.mean((motion - field) ** 2))
    assert smooth_error < 0.5 * raw_error
    # with no information the prior mean (no motion) is the answer
    none = smooth_motion(positions, measured, np.zeros_like(information))
    assert np.allclose(none, 0.0)


def test_refinement_cycle_workflow_template_is_valid():
    from pathlib import Path

    import tomoweave
    from tomoweave.engine.registry import get_protocol
    from tomoweave.workflow import load_workflow, ordered_by_dependencies

    path = Path(tomoweave.__file__).parent / "workflows" / "tilt_refinement.yaml"
    runs = ordered_by_dependencies(load_workflow(path), path)
    for run in runs:
        protocol = get_protocol(run["protocol"])
        protocol.Params(**run.get("params", {}))
        assert set(run.get("inputs", {})) <= set(protocol.inputs), run["name"]
    assert [r["protocol"] for r in runs].count("refine.tilt_geometry") == 2


def test_rigid_geometry_projects_without_deformation():
    geometry = _geometry(3)
    rigid = TiltGeometry(y_tilt_deg=geometry.y_tilt_deg, x_tilt_deg=geometry.x_tilt_deg,
                         z_rot_deg=geometry.z_rot_deg, shift_x_a=geometry.shift_x_a,
                         shift_y_a=geometry.shift_y_a, magnification=geometry.magnification)
    points = np.array([[100.0, -40.0, 20.0]])
    assert np.allclose(rigid.project(points), geometry.project(points))
    assert rigid.offsets_a(points).shape == (1, 3, 2) and not rigid.offsets_a(points).any()
