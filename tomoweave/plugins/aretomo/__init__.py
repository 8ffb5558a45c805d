"""AreTomo2 (marker-free tilt-series alignment on the GPU) as ``aretomo.*`` protocols.

AreTomo2 cannot be installed here (it needs CUDA); the protocol is offered where the program is
found (``TOMOWEAVE_ARETOMO``, programs.toml or PATH) and its command line follows AreTomo2's
documented options (https://github.com/czimaginginstitute/AreTomo2, README: -InMrc, -OutMrc,
-AngFile, -VolZ, -OutBin, -TiltAxis, -AlignZ, -Patch, -DarkTol, -Gpu). Its ``.aln`` output is
read by ``formats.aretomo`` through ``tomoweave.convert``.
"""
