"""Acquisition order and pre-exposure: checked against the real SerialEM series TS_01."""

import re
from datetime import datetime

import numpy as np
import pytest

from tomoweave.model import Particle, TiltSeries
from tomoweave.model.acquisition_order import (
    bidirectional_order,
    dose_symmetric_order,
    order_ranks,
    pre_exposures_e_a2,
)


def test_dose_symmetric_order_is_the_order_serialem_exposed_ts01(shared_data):
    text = (shared_data / "serialem" / "TS_01.mdoc").read_text()
    angles = [float(v) for v in re.findall(r"^TiltAngle = (\S+)", text, re.M)]
    stamps = [datetime.strptime(" ".join(v.split()), "%d-%b-%y %H:%M:%S")
              for v in re.findall(r"^DateTime = (.+)$", text, re.M)]
    by_time = sorted(range(len(angles)), key=lambda i: stamps[i])
    assert dose_symmetric_order(angles, group_size=2) == by_time


def test_bidirectional_order_and_pre_exposure():
    angles = [-6, -3, 0, 3, 6]
    order = bidirectional_order(angles)
    assert [angles[i] for i in order] == [0, 3, 6, -3, -6]
    pre = pre_exposures_e_a2(order, [2.0] * 5)
    assert pre.tolist() == [8.0, 6.0, 0.0, 2.0, 4.0]
    assert order_ranks(order) == [4, 3, 0, 1, 2]


def test_model_rejects_what_is_not_a_tilt_series_or_a_rotation():
    with pytest.raises(ValueError, match="at least one tilt"):
        TiltSeries(name="x", acquisition={"pixel_size_a": 1.0}, image_size_xy=(8, 8), tilts=[])
    with pytest.raises(ValueError, match="pixel_size_a"):
        TiltSeries(name="x", acquisition={"pixel_size_a": -1.0}, image_size_xy=(8, 8),
                   tilts=[{"tilt_deg": 0, "acquisition_order": 0}])
    with pytest.raises(ValueError, match="orthonormal"):
        Particle(name="p", tomogram="t", position_a=(0, 0, 0), rotation=np.ones((3, 3)).tolist())
