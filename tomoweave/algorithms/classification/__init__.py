"""Classification and heterogeneity of aligned particles (plain functions over arrays).

- :mod:`.classes3d`: 3D classification, hard or soft (maximum likelihood with a noise model per
  particle's CTF² weight), with local alignment or none; multi-reference alignment.
- :mod:`.pca`: missing-wedge-compensated principal components, eigenvolumes, trajectories.
- :mod:`.clustering`: k-means and Gaussian mixtures on component coordinates.
- :mod:`.spa_leap`: projections along Z, 2D reference-free classification with in-plane
  alignment, selection of the classes that hold a particle.

Particles enter as averaging's ``ImageSource`` (premultiplied spectra and CTF² weights) with
their poses; scores and reconstructions are averaging's (scoring.search_poses,
reconstruction.Reconstructor, fsc.gold_standard_fsc).
"""
