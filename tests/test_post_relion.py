"""post sharpening against the real RELION 3.1 ``relion_postprocess`` (Debian package relion).

The same half maps (those of test_post_sharpen: atoms blurred by a known B, independent noise)
and mask go through both, with the same Guinier range. Resolution: RELION reports the last
shell whose corrected FSC is ≥ 0.143, we interpolate; at RELION's quantisation the two agree
within one shell (each randomises phases with its own random numbers: ±0.02 in the FSC).
B-factor (RELION's rlnBfactorUsedForSharpening is minus the map's B-factor): RELION fits the
Guinier plot of the unmasked sum, whose solvent noise flattens the high shells; with
``guinier_masked=False`` we do the same and must agree within 15 %; our default fits the masked
map and must be closer to the known B than RELION.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tomoweave.algorithms.postprocess.sharpen import sharpen_half_maps
from tomoweave.algorithms.volumes import spherical_mask
from tomoweave.formats.mrc import write_mrc
from tomoweave.formats.star_io import read_star_blocks

sys.path.insert(0, str(Path(__file__).parent))
from test_post_sharpen import BOX, PIXEL_A, atom_map, blurred, half_maps  # noqa: E402

PROGRAM = shutil.which("relion_postprocess")
pytestmark = pytest.mark.skipif(
    PROGRAM is None, reason="relion_postprocess (RELION 3.1, Debian package relion) not "
    "installed: make test installs it")


@pytest.mark.parametrize(("bfactor_a2", "noise", "seed"), [(150.0, 0.1, 21), (250.0, 0.06, 22),
                                                           (200.0, 0.04, 26)])
def test_resolution_and_bfactor_agree_with_relion(tmp_path, bfactor_a2, noise, seed):
    truth = blurred(atom_map(BOX, 3000, 0.3, seed), bfactor_a2)
    half1, half2 = half_maps(truth, noise, seed + 10)
    mask = spherical_mask(BOX, 0.3 * BOX + 3, 4)
    for name, volume in (("half1", half1), ("half2", half2), ("mask", mask)):
        write_mrc(tmp_path / f"{name}.mrc", volume, PIXEL_A)
    ours = sharpen_half_maps(half1, half2, PIXEL_A, mask=mask)
    relion_mode = sharpen_half_maps(half1, half2, PIXEL_A, mask=mask, guinier_masked=False)
    low_a, high_a = ours.guinier.range_a
    (tmp_path / "out").mkdir()  # RELION writes logfile.pdf beside the output root
    completed = subprocess.run(
        [PROGRAM, "--i", "half1.mrc", "--i2", "half2.mrc", "--mask", "mask.mrc",
         "--angpix", str(PIXEL_A), "--o", "out/postprocess", "--auto_bfac",
         "--autob_lowres", f"{low_a:.4f}", "--autob_highres", f"{high_a:.4f}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    general = read_star_blocks(tmp_path / "out" / "postprocess.star")["general"]
    relion_resolution_a = float(general["rlnFinalResolution"])
    relion_bfactor_a2 = -float(general["rlnBfactorUsedForSharpening"])
    length_a = BOX * PIXEL_A
    ours_shell = np.floor(length_a / ours.resolution_a + 1e-6)
    assert abs(ours_shell - length_a / relion_resolution_a) <= 1.0 + 1e-4
    assert relion_mode.bfactor_a2 == pytest.approx(relion_bfactor_a2, rel=0.15)
    assert abs(ours.bfactor_a2 - bfactor_a2) < abs(relion_bfactor_a2 - bfactor_a2)
