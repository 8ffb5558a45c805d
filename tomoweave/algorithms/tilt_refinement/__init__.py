"""Per-particle per-tilt refinement: the average corrects the geometry and the CTF it was made
from (RELION 4's CTF refinement and frame alignment, EMAN2's sub-tilt refinement).

Every particle is compared, tilt by tilt, with the projection of its own half's reference at
its pose (:mod:`.patches`); the comparison gives per-tilt geometry (:mod:`.geometry`), per-tilt
and per-particle CTF (:mod:`.ctf`) and per-particle motion (:mod:`.motion`).
"""
