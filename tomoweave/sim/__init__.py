"""Simulated cryo-ET tilt series with ground truth (stacks, movies, .mdoc, alignment, CTF,
particles, beads, membranes, noise-free volume). See ``simulate_dataset``.

Conventions (all from tomoweave.geometry / tomoweave.algorithms.ctf_model):

- Geometry: tilt i of the stack is the projection through
  ``projection_matrix(y_tilt, x_tilt, z_rot, shift_x_a, shift_y_a)`` of the truth; image pixel =
  Å / pixel_size_a + N // 2. ``z_rot = tilt_axis_to_z_rot_deg(true tilt axis)``; the .mdoc
  states the nominal axis, the truth's z_rot differs from it by the tilt-axis error.
- Stack order = acquisition order (as SerialEM writes dose-symmetric series; ZValue i is the
  i-th exposure), so ``pre_exposure_e_a2 = i × dose_per_tilt``.
- CTF: defocus positive = underfocus, at the tilt axis (tomogram centre height); a point at
  image-frame height z (Å, third row of the projection matrix) sees ``defocus + z``.
- Movies: frame j shows the tilt image displaced by ``drift_px[j]`` = (dx, dy) pixels (content
  at (x, y) in the image is at (x + dx, y + dy) in the frame); frame 0 has no drift. Moving each
  frame back by its drift and summing gives the stack image.
- Ground truth paths (``stack_file``, ``volume_file``...) are relative to the data-set folder,
  the parent of ``truth/``.
- Scoring against the truth: ``tomoweave.sim.metrics``.

>>> from tomoweave.sim import simulate_dataset, load_truth
>>> data = simulate_dataset("out", preset="tiny", seed=1, n_series=2)
>>> truth = data.series[0].truth()
>>> truth.tilt_alignments()[0].y_tilt_deg
"""

from tomoweave.sim.config import SIM_PRESETS, SimConfig, resolve_config
from tomoweave.sim.dataset import (
    SimulatedDataset,
    SimulatedSeries,
    simulate_dataset,
    simulate_series,
)
from tomoweave.sim.truth import SeriesTruth, load_truth

__all__ = [
    "SIM_PRESETS",
    "SeriesTruth",
    "SimConfig",
    "SimulatedDataset",
    "SimulatedSeries",
    "load_truth",
    "resolve_config",
    "simulate_dataset",
    "simulate_series",
]
