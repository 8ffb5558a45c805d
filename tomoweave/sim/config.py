"""Simulation settings and the named presets.

Every setting carries its unit in its name. A preset is a dict of overrides on ``SimConfig``'s
defaults; ``resolve_config(preset, **overrides)`` merges them and validates the result.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TEMPLATE_NAMES = ("4v4r", "1bxn", "3j9i", "3qm1", "6pxm")


class SimConfig(BaseModel):
    """Everything that defines a simulated data set (given the seed)."""

    model_config = ConfigDict(extra="forbid")

    n_series: int = Field(1, ge=1, le=100)
    name_prefix: str = "TS_"
    # sampling and specimen
    pixel_size_a: float = Field(10.0, gt=0)
    image_size_px: int = Field(200, ge=16, le=4096)
    thickness_a: float = Field(1000.0, gt=0, description="ice thickness")
    # particles: template name -> count; per-template on/off is a count of 0
    particles: dict[str, int] = Field(default_factory=lambda: {"4v4r": 20, "1bxn": 8, "3j9i": 6})
    particles_on: bool = True
    protein_contrast_v: float = Field(3.0, gt=0, description="peak excess potential over ice")
    beads_on: bool = True
    n_beads: int = Field(8, ge=0)
    bead_diameter_a: float = Field(100.0, gt=0)
    bead_contrast_v: float = Field(25.0, gt=0, description="gold's excess potential over ice")
    membranes_on: bool = True
    n_vesicles: int = Field(1, ge=0)
    vesicle_radius_a: tuple[float, float] = (250.0, 380.0)
    membrane_contrast_v: float = Field(2.0, gt=0)
    # proteins sitting in the vesicle membranes: reference Z along the outward normal
    membrane_proteins: dict[str, int] = Field(default_factory=dict)
    # tilt scheme
    tilt_scheme: Literal["dose_symmetric", "bidirectional"] = "dose_symmetric"
    tilt_min_deg: float = -60.0
    tilt_max_deg: float = 60.0
    tilt_step_deg: float = Field(3.0, gt=0)
    dose_symmetric_group_size: int = Field(2, ge=1)
    bidirectional_start_deg: float = 0.0
    # misalignment (truth minus nominal); ``misalignment`` scales every term at once
    misalignment: float = Field(1.0, ge=0)
    tilt_axis_deg: float = 85.0
    tilt_axis_error_deg: float = 1.5
    tilt_offset_deg: float = 1.0
    x_tilt_deg: float = 0.0
    shift_sigma_a: float = Field(60.0, ge=0)
    # CTF and dose
    voltage_kv: float = 300.0
    spherical_aberration_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_a: float = Field(30000.0, gt=0, description="nominal defocus, underfocus positive")
    defocus_range_a: tuple[float, float] | None = Field(
        None, description="draw each series' nominal defocus uniformly from this range instead")
    defocus_sigma_a: float = Field(800.0, ge=0, description="tilt-to-tilt defocus spread")
    astigmatism_a: float = Field(400.0, ge=0, description="defocus_u - defocus_v")
    ctf_on: bool = True
    ctf_slab_a: float | None = Field(None, gt=0, description="height step of the per-height "
                                     "CTF; None: the largest step whose defocus error shifts "
                                     "the CTF phase by at most 0.01 rad at Nyquist (≤ 200 Å)")
    dose_per_tilt_e_a2: float = Field(3.0, gt=0)
    noise_on: bool = True
    damping_on: bool = True
    ice_mean_free_path_a: float = Field(3500.0, gt=0)
    # detector defects: single-pixel X-ray hits (in a random frame when movies are made)
    xrays_per_tilt: int = Field(0, ge=0)
    xray_strength: float = Field(30.0, gt=0, description="hit value / mean counts of the image")
    # movies
    movies_on: bool = False
    n_frames: int = Field(8, ge=1)
    drift_total_px: float = Field(3.0, ge=0, description="length of the drift path of a tilt")
    # outputs
    write_noise_free: bool = True

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        unknown = (set(self.particles) | set(self.membrane_proteins)) - set(TEMPLATE_NAMES)
        if unknown:
            raise ValueError(f"particles: unknown templates {sorted(unknown)}; "
                             f"expected some of {list(TEMPLATE_NAMES)}")
        if self.tilt_min_deg > self.tilt_max_deg:
            raise ValueError("tilt_min_deg must not exceed tilt_max_deg")
        if self.defocus_range_a is not None and not 0 < self.defocus_range_a[0] <= (
                self.defocus_range_a[1]):
            raise ValueError("defocus_range_a must be (low, high) with 0 < low <= high")
        if max(abs(self.tilt_min_deg), abs(self.tilt_max_deg)) >= 89:
            raise ValueError("tilts must stay within ±89°")
        return self


SIM_PRESETS: dict[str, dict[str, Any]] = {
    # engine tests: a handful of beads and small particles, 11 tilts, well under a second per series
    "tiny": {
        "pixel_size_a": 16.0, "image_size_px": 64, "thickness_a": 480.0,
        "particles": {"1bxn": 2, "6pxm": 2}, "n_beads": 4, "n_vesicles": 0,
        "tilt_min_deg": -50.0, "tilt_max_deg": 50.0, "tilt_step_deg": 10.0,
        "shift_sigma_a": 80.0, "n_frames": 4,
    },
    # algorithm tests: ribosomes for template matching, beads for alignment, one vesicle
    "test": {
        "pixel_size_a": 10.0, "image_size_px": 200, "thickness_a": 1000.0,
        "particles": {"4v4r": 20, "1bxn": 8, "3j9i": 6}, "n_beads": 8, "n_vesicles": 1,
        "membrane_proteins": {"6pxm": 6},
    },
    # the demo pipeline: a larger field of view, more of everything
    "demo": {
        "pixel_size_a": 8.0, "image_size_px": 384, "thickness_a": 1200.0,
        "particles": {"4v4r": 45, "1bxn": 25, "3j9i": 15, "6pxm": 15}, "n_beads": 14,
        "n_vesicles": 2, "n_series": 2, "membrane_proteins": {"6pxm": 16},
    },
    # subtomogram averaging (issue 12): ribosomes only, realistic dose (41 tilts × 3 e/Å²),
    # ±60° dose-symmetric, demo-like shot noise; ``sta_test`` is the small variant for tests
    # (one series, ~40 particles), ``sta`` the benchmark set (~500 particles)
    "sta_test": {
        "pixel_size_a": 10.0, "image_size_px": 192, "thickness_a": 800.0,
        "particles": {"4v4r": 60}, "n_beads": 4, "n_vesicles": 0, "membranes_on": False,
        "write_noise_free": False,
    },
    "sta": {
        "pixel_size_a": 10.0, "image_size_px": 320, "thickness_a": 900.0, "n_series": 5,
        "particles": {"4v4r": 160}, "n_beads": 6, "n_vesicles": 0, "membranes_on": False,
        "write_noise_free": False,
    },
    # strong CTF for pseudo-subtomograms: 4 Å/px before binning, defocus 3–5 µm per series,
    # proteasomes (3j9i) whose 20 Å detail lies beyond the first CTF zero
    "sta_ctf_test": {
        "pixel_size_a": 4.0, "image_size_px": 256, "thickness_a": 500.0,
        "particles": {"3j9i": 40}, "n_beads": 3, "n_vesicles": 0, "membranes_on": False,
        "defocus_range_a": (30000.0, 50000.0), "write_noise_free": False,
    },
    "sta_ctf": {
        "pixel_size_a": 4.0, "image_size_px": 384, "thickness_a": 550.0, "n_series": 10,
        "particles": {"3j9i": 70}, "n_beads": 4, "n_vesicles": 0, "membranes_on": False,
        "defocus_range_a": (30000.0, 50000.0), "write_noise_free": False,
    },
}


def resolve_config(preset: str = "test", **overrides: Any) -> SimConfig:
    """The settings of ``preset`` with ``overrides`` applied, validated."""
    if preset not in SIM_PRESETS:
        raise ValueError(f"unknown simulation preset {preset!r}; expected one of {list(SIM_PRESETS)}")
    settings = {**SIM_PRESETS[preset], **overrides}
    try:
        return SimConfig(**settings)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in error.errors())
        raise ValueError(f"simulation settings: {problems}") from None
