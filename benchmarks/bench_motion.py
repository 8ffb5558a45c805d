"""Motion correction: tomoweave vs RELION 3.1's own implementation on the same simulated movies.

Both align the same movies of the simulator's "test" preset (41 tilts × 8 frames, 200² px,
Poisson noise) globally (RELION with --skip_defect: the movies have no hot pixels). It prints
the wall-time ratio and each program's per-frame drift error against the simulator's ground
truth (RMS over all frames, after removing each movie's mean offset, which is arbitrary).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

RELION = "relion_run_motioncorr"
THREADS = 2
BFACTOR_PX2 = 150.0  # RELION's default; tomoweave runs with the same


def main() -> None:
    from tomoweave.algorithms.motion import correct_motion
    from tomoweave.formats.mrc import read_mrc
    from tomoweave.sim import simulate_dataset

    with tempfile.TemporaryDirectory(prefix="bench_motion_") as folder:
        root = Path(folder)
        dataset = simulate_dataset(root / "sim", preset="test", seed=7, movies_on=True)
        truth = dataset.series[0].truth()
        config = dataset.config
        tilts = [t for t in truth.tilts if t.movie_file]
        movies = [root / "sim" / "frames" / t.movie_file for t in tilts]
        dose_per_frame = config.dose_per_tilt_e_a2 / config.n_frames
        print(f"{len(movies)} movies of {config.n_frames} frames, {config.image_size_px}² px, "
              f"{config.pixel_size_a} Å/px, drift path {config.drift_total_px} px per movie")

        start = time.perf_counter()
        ours = []
        for movie, tilt in zip(movies, tilts, strict=True):
            frames, _ = read_mrc(movie)
            result = correct_motion(frames, config.pixel_size_a, dose_per_frame,
                                    tilt.pre_exposure_e_a2, config.voltage_kv, BFACTOR_PX2)
            ours.append(result.drift_px)
        ours_s = time.perf_counter() - start
        ours_error = _rms_error(ours, tilts)
        print(f"tomoweave motion.correct (global, {THREADS} cores): {ours_s:.2f} s, "
              f"drift error {ours_error:.3f} px RMS")

        if shutil.which(RELION) is None:
            print(f"RELION comparison skipped: {RELION} not found (Debian package 'relion': "
                  f"apt-get update && apt-get install -y relion)")
            return
        relion_s, relion_drifts = _run_relion(root / "relion", movies, config, dose_per_frame)
        relion_error = _rms_error(relion_drifts, tilts)
        print(f"RELION 3.1 --use_own (global, --j {THREADS}): {relion_s:.2f} s, "
              f"drift error {relion_error:.3f} px RMS")
        print(f"time ratio tomoweave / RELION: {ours_s / relion_s:.2f}")
        print(f"drift error ratio tomoweave / RELION: {ours_error / relion_error:.2f}")


def _rms_error(drifts: list[np.ndarray], tilts) -> float:
    squared = []
    for drift, tilt in zip(drifts, tilts, strict=True):
        error = np.asarray(drift) - np.asarray(tilt.drift_px)
        error -= error.mean(axis=0)
        squared.append(np.sum(error**2, axis=1))
    return float(np.sqrt(np.mean(np.concatenate(squared))))


def _run_relion(folder: Path, movies: list[Path], config, dose_per_frame: float):
    """Run relion_run_motioncorr --use_own on all movies; (seconds, drifts in our convention)."""
    import starfile

    folder.mkdir(parents=True)
    names = []
    for index, movie in enumerate(movies):
        link = folder / f"movie{index:03d}.mrc"
        link.symlink_to(movie)
        names.append(link.name)
    star = folder / "movies.star"
    star.write_text(
        "\n# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
        "_rlnMicrographOriginalPixelSize #3\n_rlnVoltage #4\n_rlnSphericalAberration #5\n"
        "_rlnAmplitudeContrast #6\n"
        f"opticsGroup1 1 {config.pixel_size_a:.6f} {config.voltage_kv:.6f} "
        f"{config.spherical_aberration_mm:.6f} {config.amplitude_contrast:.6f}\n\n"
        "# version 30001\n\ndata_movies\n\nloop_\n_rlnMicrographMovieName #1\n"
        "_rlnOpticsGroup #2\n" + "".join(f"{name} 1\n" for name in names))
    command = [RELION, "--i", star.name, "--o", "MotionCorr/", "--use_own", "--j", str(THREADS),
               "--skip_defect", "--bfactor", f"{BFACTOR_PX2:g}", "--patch_x", "1", "--patch_y", "1",
               "--dose_weighting", "--dose_per_frame", f"{dose_per_frame:g}",
               "--angpix", f"{config.pixel_size_a:g}", "--voltage", f"{config.voltage_kv:g}"]
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    drifts = []
    for name in names:
        table = starfile.read(folder / "MotionCorr" / Path(name).with_suffix(".star"))
        shifts = table["global_shift"]
        # RELION stores the shift that brings a frame back onto the first one: minus its drift.
        drifts.append(-shifts[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy())
    return seconds, drifts


if __name__ == "__main__":
    main()
