"""denoise.filter and denoise.n2n: denoised tomograms.

``denoise.filter`` applies an edge-preserving filter (Perona-Malik anisotropic diffusion or a
bilateral filter). ``denoise.n2n`` trains a small Noise2Noise model (a locally adaptive learned
filter bank, tomoweave.algorithms.denoise.FilterBankN2N) on the even/odd tomograms of each
tomogram and applies it to both halves; the model is saved beside the output.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from tomoweave.algorithms import denoise
from tomoweave.engine import Input, ItemError, Output, ProcessContext, Protocol, param
from tomoweave.formats.mrc import MrcError, read_mrc, write_mrc
from tomoweave.model import Tomogram
from tomoweave.protocols.reconstruct import slices_png


class FilterParams(BaseModel):
    method: Literal["diffusion", "bilateral"] = param(
        "diffusion", choices=["diffusion", "bilateral"],
        help="diffusion: Perona-Malik anisotropic diffusion; bilateral: bilateral filter")
    iterations: int = param(10, ge=1, le=200, help="diffusion steps")
    kappa: float = param(2.0, gt=0, help="diffusion edge threshold, in noise SDs")
    sigma_space_px: float = param(1.5, gt=0, le=8, unit="px", help="bilateral spatial SD")
    sigma_range: float = param(3.0, gt=0, help="bilateral intensity SD, in noise SDs")


class N2NParams(BaseModel):
    n_strength_bins: int = param(4, ge=1, le=16, help="bins of local gradient strength: "
                                                      "the model fits one filter per bin and sign "
                                                      "of curvature")
    ridge: float = param(1e-3, ge=0, help="relative ridge regularisation")


class DenoiseFilter(Protocol):
    """Edge-preserving denoising of tomograms (anisotropic diffusion or bilateral)."""

    name = "denoise.filter"
    label = "Denoise tomograms (edge-preserving filter)"
    Params = FilterParams
    inputs = {"tomograms": Input(Tomogram, help="tomograms to denoise")}
    outputs = {"tomograms": Output(Tomogram, help="denoised tomograms")}
    citations = [
        "Perona P, Malik J (1990) Scale-space and edge detection using anisotropic diffusion. "
        "IEEE Trans Pattern Anal Mach Intell 12:629-639. doi:10.1109/34.56205",
        "Tomasi C, Manduchi R (1998) Bilateral filtering for gray and color images. ICCV, "
        "839-846. doi:10.1109/ICCV.1998.710815",
    ]

    def process(self, item: Tomogram, params: FilterParams,
                context: ProcessContext) -> dict[str, Any]:
        volume = _read(item.path, context)
        if params.method == "diffusion":
            result = denoise.anisotropic_diffusion(volume, params.iterations, params.kappa)
            label = f"diffusion {params.iterations} steps, kappa {params.kappa:g}"
        else:
            result = denoise.bilateral_filter(volume, params.sigma_space_px, params.sigma_range)
            label = f"bilateral {params.sigma_space_px:g} px, {params.sigma_range:g} SD"
        return {"tomograms": _output(item, result, label, context)}


class DenoiseN2N(Protocol):
    """Noise2Noise denoising trained on each tomogram's own even/odd halves (CPU, seconds)."""

    name = "denoise.n2n"
    label = "Denoise tomograms (Noise2Noise)"
    Params = N2NParams
    inputs = {"tomograms": Input(Tomogram, help="tomograms with even/odd halves")}
    outputs = {"tomograms": Output(Tomogram, help="denoised tomograms")}
    citations = [
        "Lehtinen J et al. (2018) Noise2Noise: learning image restoration without clean data. "
        "ICML, PMLR 80:2965-2974.",
        "Buchholz TO, Jordan M, Pigino G, Jug F (2019) Cryo-CARE: content-aware image "
        "restoration for cryo-transmission electron microscopy data. ISBI, 502-506. "
        "doi:10.1109/ISBI.2019.8759519",
        "Romano Y, Isidoro J, Milanfar P (2017) RAISR: rapid and accurate image super "
        "resolution. IEEE Trans Comput Imaging 3:110-125. doi:10.1109/TCI.2016.2629284",
    ]

    def process(self, item: Tomogram, params: N2NParams,
                context: ProcessContext) -> dict[str, Any]:
        if not (item.even_path and item.odd_path):
            raise ItemError(f"{item.name}: no even/odd tomograms to train Noise2Noise on; "
                            f"reconstruct from tilt series with even/odd sums (even_odd=true) "
                            f"or use denoise.filter")
        even, odd = _read(item.even_path, context), _read(item.odd_path, context)
        if even.shape != odd.shape:
            raise ItemError(f"{item.name}: even {even.shape} and odd {odd.shape} differ in shape")
        model = denoise.FilterBankN2N(n_strength_bins=params.n_strength_bins, ridge=params.ridge)
        model.fit(even, odd)
        result = model.denoise_pair(even, odd)
        model_path = context.output_path(f"{item.name}_n2n_model.json")
        model_path.write_text(model.to_json())
        context.log(f"{item.name}: Noise2Noise filter bank trained on {even.shape[::-1]} "
                    f"even/odd voxels; model in {context.relative(model_path)}")
        return {"tomograms": _output(item, result, "Noise2Noise", context)}


def _read(stored_path: str, context: ProcessContext):
    try:
        volume, _ = read_mrc(context.resolve(stored_path))
    except MrcError as error:
        raise ItemError(str(error)) from None
    return volume


def _output(item: Tomogram, volume, label: str, context: ProcessContext) -> Tomogram:
    path = write_mrc(context.output_path(f"{item.name}.mrc"), volume, item.pixel_size_a)
    slices_png(volume, context.output_path(f"{item.name}_slices.png"), f"{item.name} {label}")
    return item.model_copy(update={"path": context.relative(path), "even_path": None,
                                   "odd_path": None,
                                   "method": f"{item.method} + {label}".strip(" +")})
