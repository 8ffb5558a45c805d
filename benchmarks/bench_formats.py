"""Readers of tomoweave.formats against the bare libraries they are built on, in the same run.

tomoweave adds validation (line-numbered errors) and conversion into model objects; this shows
what that costs relative to the library alone on the real sample files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import alnfile
import mdocfile
import starfile

from tomoweave.formats.aretomo import read_aln
from tomoweave.formats.mdoc import read_mdoc
from tomoweave.formats.relion5 import read_relion5
from tomoweave.formats.warp import read_warp_xml

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _best_seconds(function, repeats: int = 20) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    logging.getLogger("mdocfile").setLevel(logging.ERROR)
    tomograms = DATA / "relion5" / "tomograms.star"
    series_star = DATA / "relion5" / "tomo200528_107.star"
    cases = [
        ("mdoc TS_01 (41 tilts)", lambda: read_mdoc(DATA / "serialem" / "TS_01.mdoc"),
         "mdocfile.read", lambda: mdocfile.read(DATA / "serialem" / "TS_01.mdoc")),
        ("RELION 5 tomograms + tilt series", lambda: read_relion5(tomograms),
         "starfile.read x2", lambda: (starfile.read(tomograms), starfile.read(series_star))),
        ("AreTomo .aln (61 rows)", lambda: read_aln(DATA / "aretomo" / "global_no_local.aln"),
         "alnfile.read", lambda: alnfile.read(DATA / "aretomo" / "global_no_local.aln")),
    ]
    print(f"{'reader':36s} {'tomoweave ms':>13s} {'peer':>18s} {'peer ms':>9s} {'ratio':>7s}")
    for name, ours, peer_name, peer in cases:
        mine, theirs = _best_seconds(ours), _best_seconds(peer)
        print(f"{name:36s} {mine * 1e3:13.2f} {peer_name:>18s} {theirs * 1e3:9.2f} "
              f"{mine / theirs:7.2f}x")
    warp_ms = _best_seconds(lambda: read_warp_xml(DATA / "warp" / "gs04_ts_003.xml"), 5) * 1e3
    star_ms = _best_seconds(lambda: starfile.read(series_star), 5) * 1e3
    print(f"Warp XML (47 tilts, 0.86 MB) {warp_ms:.2f} ms = {warp_ms / star_ms:.2f}x one RELION "
          f"tilt-series STAR read by starfile")


if __name__ == "__main__":
    main()
