"""Simulated cryo-ET tilt series with ground truth (stacks, movies, .mdoc, alignment, CTF,
particles, beads, membranes, noise-free volume). See ``simulate_dataset``.

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
