"""The automatic picking threshold: the two-population split above the noise tail.

Fast tests on score values; the scenes in test_pick_scenes.py test the same on tomograms.
"""

from __future__ import annotations

import numpy as np

from tomoweave.algorithms import template_picking as tp

SIGMA = 0.035  # noise std of one score, about that of the picking scenes


def test_a_clump_of_the_best_particles_is_not_a_population():
    """One population of particle scores above the noise threshold, its best few close together.

    The peak scores above the noise threshold (0.200) of the crowded scene with gold and a
    vesicle, seed 3 (test_pick_scenes.py): all 45 ribosomes and one noise peak. Compared with
    one uncut Gaussian, which fits these cut values badly, two Gaussians won and the 8 best
    (spread 0.006) passed for a population of their own: the threshold cut the particles at
    0.30 (recall 0.18). Compared as laws cut at the threshold, one population wins.
    """
    values = np.array([0.317, 0.317, 0.316, 0.315, 0.307, 0.305, 0.305, 0.3, 0.29, 0.285,
                       0.278, 0.275, 0.274, 0.271, 0.267, 0.265, 0.264, 0.262, 0.257, 0.252,
                       0.25, 0.25, 0.248, 0.248, 0.244, 0.243, 0.243, 0.241, 0.239, 0.236,
                       0.235, 0.234, 0.233, 0.23, 0.229, 0.228, 0.227, 0.226, 0.226, 0.225,
                       0.222, 0.212, 0.21, 0.209, 0.209, 0.201])
    assert tp.split_populations(values) > 0.29  # the failure without the cut, kept visible
    assert tp.split_populations(values, cut=0.200) == -np.inf


def test_one_cut_gaussian_population_is_not_split():
    """Draws of one Gaussian kept above a cut at its mean minus 0.5 σ: never two groups."""
    rng = np.random.default_rng(11)
    splits = 0
    for _ in range(20):
        values = 0.24 + SIGMA * rng.standard_normal(80)
        values = values[values >= 0.24 - 0.5 * SIGMA]
        splits += tp.split_populations(values, cut=0.24 - 0.5 * SIGMA) > -np.inf
    assert splits <= 1  # BIC and D > 3 together: a chance split is rare, not the rule


def test_two_populations_above_the_cut_are_still_split():
    """Look-alikes at 0.22 and particles at 0.42 (6 σ apart), cut at 0.20: split between them."""
    rng = np.random.default_rng(5)
    look_alikes = 0.22 + SIGMA * rng.standard_normal(60)
    particles = 0.42 + SIGMA * rng.standard_normal(25)
    values = np.concatenate([look_alikes, particles])
    level = tp.split_populations(values[values >= 0.20], cut=0.20)
    assert 0.28 < level < 0.36
    # what is kept above the level: the particles, nearly all of them and nearly only them
    assert (particles >= level).mean() >= 0.9 and (look_alikes >= level).mean() <= 0.05
