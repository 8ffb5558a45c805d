"""Reconstruction speed and accuracy against ASTRA's 2D CPU algorithms, in one run.

- Speed: a 61-tilt 512² series into 512×512×128 and a 1024² series into 1024×1024×256. tomoweave's
  WBP and SIRT (numba, both cores) against ASTRA's FBP_CPU and SIRT_CPU run slice by slice (one
  process, and the slices split over two processes). ASTRA is timed on a subset of slices when a
  full run would take minutes; its cost is linear in the number of slices, so the time is scaled
  to the full volume (printed as such).
- Memory: peak traced allocation of WBP for the 1024 case, reading the stack memory-mapped.
- Accuracy: correlation with the simulator's ground-truth volume (inside the slab, after the same
  low-pass) of WBP and SIRT against ASTRA's FBP and SIRT on the same aligned noise-free data.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from tomoweave.algorithms import projector, reconstruction
from tomoweave.formats.mrc import mmap_mrc, write_mrc
from tomoweave.geometry import projection_matrix

say = functools.partial(print, flush=True)
CASES = ((512, 128), (1024, 256))
N_TILTS = 61
SIRT_ITERATIONS_TIMED = 2
ASTRA_MAX_SLICES = {"FBP": 128, "SIRT": 32}  # slices timed per ASTRA run (scaled to the volume)


# ----------------------------------------------------------------------------- ASTRA helpers
def astra_geometry(nz: int, nx: int, n_u: int, tilt_deg: np.ndarray):
    """ASTRA 2D parallel geometry matching tomoweave's for a series tilted about Y.

    tomoweave puts the centre of an axis at index N // 2 and maps (x, z) to u = cos t x +
    sin t z; ASTRA centres pixels between indices for even sizes and turns the other way. The
    volume window is shifted by half a pixel for even sizes and the detector gets one extra
    (zero) column for even widths, which makes the two identical (checked to 1e-3 px).
    """
    import astra

    min_x = -nx / 2 - (0.5 if nx % 2 == 0 else 0.0)
    min_z = -nz / 2 + (0.5 if nz % 2 == 0 else 0.0)
    volume_geometry = astra.create_vol_geom(nz, nx, min_x, min_x + nx, min_z, min_z + nz)
    n_detector = n_u + 1 - n_u % 2
    projection_geometry = astra.create_proj_geom("parallel", 1.0, n_detector,
                                                 -np.radians(tilt_deg))
    return volume_geometry, projection_geometry


def astra_reconstruct(rows: np.ndarray, tilt_deg: np.ndarray, nz: int, algorithm: str = "FBP",
                      iterations: int = 1, slices: range | None = None) -> np.ndarray:
    """Reconstruct rows [v, tilt, u] slice by slice with ASTRA's ``FBP`` or ``SIRT`` (CPU).

    Returns the volume [z, len(slices), x] (x = u width).
    """
    import astra

    n_v, _, n_u = rows.shape
    slices = slices if slices is not None else range(n_v)
    volume_geometry, projection_geometry = astra_geometry(nz, n_u, n_u, tilt_deg)
    projector_id = astra.create_projector("line", projection_geometry, volume_geometry)
    n_detector = projection_geometry["DetectorCount"]
    sinogram = np.zeros((len(tilt_deg), n_detector), dtype=np.float32)
    out = np.empty((nz, len(slices), n_u), dtype=np.float32)
    sinogram_id = astra.data2d.create("-sino", projection_geometry, sinogram)
    volume_id = astra.data2d.create("-vol", volume_geometry, 0.0)
    config = astra.astra_dict(algorithm)
    config.update(ProjectorId=projector_id, ProjectionDataId=sinogram_id,
                  ReconstructionDataId=volume_id)
    try:
        for index, v in enumerate(slices):
            sinogram[:, :n_u] = rows[v]
            astra.data2d.store(sinogram_id, sinogram)
            astra.data2d.store(volume_id, 0.0)
            algorithm_id = astra.algorithm.create(config)
            astra.algorithm.run(algorithm_id, iterations)
            astra.algorithm.delete(algorithm_id)
            out[:, index, :] = astra.data2d.get_shared(volume_id)
    finally:
        astra.data2d.delete([sinogram_id, volume_id])
        astra.projector.delete(projector_id)
    return out


_SHARED: dict = {}


def _astra_worker(arguments):
    algorithm, iterations, start, stop = arguments
    shared = _SHARED
    return astra_reconstruct(shared["rows"], shared["tilts"], shared["nz"], algorithm,
                             iterations, range(start, stop))


def astra_parallel(rows, tilt_deg, nz, algorithm, iterations, slices: range, processes=2):
    """The same, with the slices split over ``processes`` forked processes (fork shares rows)."""
    _SHARED.update(rows=rows, tilts=tilt_deg, nz=nz)
    bounds = np.linspace(slices.start, slices.stop, processes + 1).astype(int)
    tasks = [(algorithm, iterations, bounds[i], bounds[i + 1]) for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.map(_astra_worker, tasks)
    return np.concatenate(parts, axis=1)


# ----------------------------------------------------------------------------- data
def phantom_rows(n: int, nz: int, tilt_deg: np.ndarray, seed: int = 0) -> tuple:
    """Projections [v, tilt, u] of random Gaussian blobs in a slab (tomoweave's projector)."""
    rng = np.random.default_rng(seed)
    volume = np.zeros((nz, n, n), dtype=np.float32)
    for _ in range(60 * (n // 256) ** 2):
        z, y, x = rng.integers(nz // 8, nz - nz // 8), rng.integers(8, n - 8), rng.integers(8, n - 8)
        radius = int(rng.integers(2, 6))
        volume[max(0, z - radius):z + radius, max(0, y - radius):y + radius,
               max(0, x - radius):x + radius] += 1.0
    matrices = np.stack([projection_matrix(t) for t in tilt_deg])
    geometry = reconstruction.Geometry(matrices, (n, n), 1.0, (nz, n, n))
    rows = projector.forward_project(volume, geometry.coefficients(), (n, len(tilt_deg), n))
    return rows, geometry


def _clock() -> tuple[float, float]:
    """(wall s, CPU s of this process and its finished children): the CPU time shows the work
    done independently of how busy the machine is."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return time.perf_counter(), cpu


def _timed(function, *args, **kwargs):
    wall, cpu = _clock()
    result = function(*args, **kwargs)
    wall_end, cpu_end = _clock()
    return (wall_end - wall, cpu_end - cpu), result


# ----------------------------------------------------------------------------- speed
def bench_speed(n: int, nz: int) -> None:
    tilt_deg = np.linspace(-60, 60, N_TILTS)
    rows, geometry = phantom_rows(n, nz, tilt_deg)
    updates = nz * n * n * N_TILTS
    say(f"\n-- {N_TILTS} tilts {n}x{n} -> {n}x{n}x{nz} ({updates / 1e9:.2f} G voxel-updates "
        f"per back-projection); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        stack_path = Path(folder) / "stack.mrc"
        write_mrc(stack_path, np.ascontiguousarray(rows.transpose(1, 0, 2)), 1.0, stack=True)
        with mmap_mrc(stack_path) as mrc:
            def load(index, data=mrc.data):
                return np.asarray(data[index], dtype=np.float32)

            reconstruction.reconstruct_wbp(load, _small(geometry))  # compile outside timing
            tracemalloc.start()
            wbp, volume = _timed(reconstruction.reconstruct_wbp, load, geometry)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    say(f"tomoweave WBP: {wbp[0]:.2f} s wall, {wbp[1]:.2f} CPU-s; {updates / wbp[0] / 1e9:.2f} "
        f"G voxel-updates/s wall ({updates / wbp[1] / 1e9:.2f} per CPU-s); peak traced memory "
        f"{peak / 2**30:.2f} GiB = {peak / volume.nbytes:.2f}x the tomogram")
    del volume
    sirt = _sirt_time_per_iteration(rows, geometry)
    say(f"tomoweave SIRT: {sirt[0]:.2f} s wall, {sirt[1]:.2f} CPU-s per iteration (forward + "
        f"back projection); {2 * updates / sirt[0] / 1e9:.2f} G voxel-updates/s wall")
    for algorithm, ours in (("FBP", wbp), ("SIRT", sirt)):
        count = min(n, ASTRA_MAX_SLICES[algorithm])
        slices = range(n // 2 - count // 2, n // 2 - count // 2 + count)
        one, _ = _timed(astra_reconstruct, rows, tilt_deg, nz, algorithm, 1, slices)
        two, _ = _timed(astra_parallel, rows, tilt_deg, nz, algorithm, 1, slices)
        scale = n / count
        one, two = np.array(one) * scale, np.array(two) * scale
        what = "WBP" if algorithm == "FBP" else "SIRT per iteration"
        say(f"ASTRA {algorithm}_CPU ({count} of {n} slices timed, scaled x{scale:.0f}): "
            f"1 process {one[0]:.1f} s wall / {one[1]:.1f} CPU-s "
            f"({updates / one[0] / 1e9:.3f} G/s), 2 processes {two[0]:.1f} s wall / "
            f"{two[1]:.1f} CPU-s")
        say(f"  => {what}: tomoweave is {one[0] / ours[0]:.1f}x (wall) faster than ASTRA in one "
            f"process and {two[0] / ours[0]:.1f}x (wall) than ASTRA on two; per CPU-second "
            f"{one[1] / ours[1]:.1f}x / {two[1] / ours[1]:.1f}x")


def _small(geometry):
    return reconstruction.Geometry(geometry.matrices, geometry.image_shape_yx,
                                   geometry.pixel_size_a, (4, 8, geometry.volume_shape_zyx[2]))


def _sirt_time_per_iteration(rows, geometry) -> tuple[float, float]:
    ticks = []

    def tick(iteration, volume):
        ticks.append(_clock())

    def load(index):
        return rows[:, index, :]

    reconstruction.reconstruct_sirt(load, _small(geometry), 1)  # compile outside timing
    start = _clock()
    reconstruction.reconstruct_sirt(load, geometry, SIRT_ITERATIONS_TIMED, callback=tick)
    # per-iteration time from the iterations only (the one-off row/column sums excluded)
    first = ticks[0] if len(ticks) >= 2 else start
    count = max(1, len(ticks) - 1) if len(ticks) >= 2 else 1
    return (ticks[-1][0] - first[0]) / count, (ticks[-1][1] - first[1]) / count


# ----------------------------------------------------------------------------- accuracy
def bench_accuracy(sirt_iterations: int = 20) -> None:
    from tomoweave.formats.mrc import read_mrc
    from tomoweave.sim import simulate_dataset

    with tempfile.TemporaryDirectory() as folder:
        data = simulate_dataset(folder, preset="test", seed=3, misalignment=0.0,
                                tilt_axis_deg=0.0, noise_on=False)
        truth = data.series[0].truth()
        projections, _ = read_mrc(data.series[0].projections_path)
        volume_truth, _ = read_mrc(data.series[0].volume_path)
    results = compare_with_astra(projections, truth, volume_truth, sirt_iterations)
    say(f"\n-- accuracy on the simulator's 'test' specimen (noise-free line integrals, "
          f"{len(truth.tilts)} tilts, correlation with the truth volume after a "
          f"{results['resolution_a']:.0f} Å low-pass)")
    for name in ("WBP", "SIRT"):
        ours, theirs = results[name]
        say(f"{name}: tomoweave {ours:.4f}, ASTRA {theirs:.4f}, difference {ours - theirs:+.4f}")


def compare_with_astra(projections: np.ndarray, truth, volume_truth: np.ndarray,
                       sirt_iterations: int) -> dict:
    """Correlations (tomoweave, ASTRA) for WBP/FBP and SIRT on an aligned series (z_rot = 0,
    no shifts) of the simulator, inside the slab of specimen, after a 2.5-pixel low-pass."""
    pixel_a = truth.pixel_size_a
    geometry = reconstruction.make_geometry(truth.projection_matrices(), projections.shape[1:],
                                            pixel_a, volume_truth.shape[0] * pixel_a)
    tilt_deg = geometry.tilt_deg()
    rows = np.ascontiguousarray(projections.transpose(1, 0, 2))
    nz = geometry.volume_shape_zyx[0]
    resolution_a = 2.5 * pixel_a
    mask = slab_mask(volume_truth.shape, truth.thickness_a / pixel_a)
    score = {}
    for name in ("WBP", "SIRT"):
        if name == "WBP":
            ours = reconstruction.reconstruct_wbp(lambda i: projections[i], geometry, "ramp")
            theirs = astra_reconstruct(rows, tilt_deg, nz, "FBP")
        else:
            ours = reconstruction.reconstruct_sirt(lambda i: projections[i], geometry,
                                                   sirt_iterations)
            theirs = astra_reconstruct(rows, tilt_deg, nz, "SIRT", sirt_iterations)
        score[name] = tuple(reconstruction.lowpass_correlation(v, volume_truth, pixel_a,
                                                               resolution_a, mask)
                            for v in (ours, theirs))
    score["resolution_a"] = resolution_a
    return score


def slab_mask(shape_zyx: tuple[int, int, int], thickness_px: float) -> np.ndarray:
    """Voxels within the specimen slab (|z - centre| <= thickness / 2), away from the x/y edges."""
    nz, ny, nx = shape_zyx
    z = np.abs(np.arange(nz) - nz // 2) <= thickness_px / 2
    margin_y, margin_x = ny // 16, nx // 16
    mask = np.zeros(shape_zyx, dtype=bool)
    mask[z, margin_y:ny - margin_y, margin_x:nx - margin_x] = True
    return mask


def main() -> None:
    bench_accuracy()
    for n, nz in CASES:
        bench_speed(n, nz)


if __name__ == "__main__":
    main()
