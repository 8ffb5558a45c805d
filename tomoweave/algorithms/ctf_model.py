"""The contrast transfer function of a transmission electron microscope.

Conventions: defocus positive for underfocus (Å), astigmatism angle of the U axis from the image
X axis (°, counter-clockwise), the CTF is ``-sin(chi)`` with amplitude contrast folded into chi
(CTFFIND's and RELION's convention), so a thin weak-phase object in underfocus appears dark.
"""

from __future__ import annotations

import numpy as np


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at ``voltage_kv`` kV."""
    volts = voltage_kv * 1e3
    return float(12.2643247 / np.sqrt(volts * (1.0 + 0.978466e-6 * volts)))


def frequency_grid_2d(shape_yx: tuple[int, int], pixel_size_a: float, rfft: bool = False):
    """Spatial-frequency components (fy, fx) in 1/Å for an image of ``shape_yx`` (FFT order)."""
    fy = np.fft.fftfreq(shape_yx[0], d=pixel_size_a)
    fx = np.fft.rfftfreq(shape_yx[1], d=pixel_size_a) if rfft else np.fft.fftfreq(
        shape_yx[1], d=pixel_size_a
    )
    return np.meshgrid(fy, fx, indexing="ij")


def ctf_2d(
    shape_yx: tuple[int, int],
    pixel_size_a: float,
    defocus_u_a: float,
    defocus_v_a: float,
    astigmatism_angle_deg: float = 0.0,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float = 0.0,
    rfft: bool = False,
) -> np.ndarray:
    """CTF on the FFT grid of an image, float32, shape ``shape_yx`` (or the rfft half-grid).

    Parameters
    ----------
    shape_yx : (int, int)
        Image shape [y, x] in pixels.
    pixel_size_a : float
        Pixel size in Å.
    defocus_u_a, defocus_v_a : float
        Defocus along the major and minor axes, Å, positive = underfocus.
    astigmatism_angle_deg : float
        Angle of the U axis from the X axis, degrees.
    """
    fy, fx = frequency_grid_2d(shape_yx, pixel_size_a, rfft=rfft)
    return ctf_at_frequencies(
        fx, fy, defocus_u_a, defocus_v_a, astigmatism_angle_deg, voltage_kv,
        spherical_aberration_mm, amplitude_contrast, phase_shift_deg,
    ).astype(np.float32)


def ctf_at_frequencies(
    fx: np.ndarray,
    fy: np.ndarray,
    defocus_u_a: float | np.ndarray,
    defocus_v_a: float | np.ndarray,
    astigmatism_angle_deg: float = 0.0,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float = 0.0,
) -> np.ndarray:
    """CTF value at frequencies (fx, fy) in 1/Å (arrays broadcast together): -sin(chi)."""
    return -np.sin(ctf_phase(fx, fy, defocus_u_a, defocus_v_a, astigmatism_angle_deg,
                             voltage_kv, spherical_aberration_mm, amplitude_contrast,
                             phase_shift_deg))


def ctf_phase(
    fx: np.ndarray,
    fy: np.ndarray,
    defocus_u_a: float | np.ndarray,
    defocus_v_a: float | np.ndarray,
    astigmatism_angle_deg: float | np.ndarray = 0.0,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Phase chi (radians) of the CTF = -sin(chi) at frequencies (fx, fy) in 1/Å.

    chi = π λ D(θ) f² − π Cs λ³ f⁴ / 2 + amplitude phase + phase shift, with D(θ) the defocus
    along the direction θ of the frequency (astigmatism); a defocus change δ adds π λ δ f².
    """
    wavelength_a = electron_wavelength_a(voltage_kv)
    cs_a = spherical_aberration_mm * 1e7
    f2 = fx * fx + fy * fy
    angle = np.arctan2(fy, fx) - np.radians(astigmatism_angle_deg)
    defocus_a = 0.5 * (defocus_u_a + defocus_v_a + (defocus_u_a - defocus_v_a) * np.cos(2 * angle))
    amplitude_phase = np.arctan2(amplitude_contrast, np.sqrt(1.0 - amplitude_contrast**2))
    return (
        np.pi * wavelength_a * defocus_a * f2
        - 0.5 * np.pi * cs_a * wavelength_a**3 * f2 * f2
        + amplitude_phase
        + np.radians(phase_shift_deg)
    )
