"""Post-processing of averages: sharpening, local resolution, subtraction and map back.

Plain functions over arrays (the layer rule of ``algorithms``); the FSC numerics come from
``algorithms.averaging.fsc`` and ``algorithms.fourier``.
"""
