"""MRC reading with FEI/EPU extended headers (synthetic file written with mrcfile)."""

import mrcfile
import numpy as np
import pytest
from mrcfile.dtypes import get_ext_header_dtype

from tomoweave.formats.mrc import mrc_extended_header, mrc_header_info, read_mrc, write_mrc


def _fei_stack(path, tilts_deg, pixel_m=2.5e-10, defocus_m=-3e-6):
    dtype = get_ext_header_dtype(b"FEI1", "<")
    records = np.zeros(len(tilts_deg), dtype=dtype)
    records["Metadata size"] = dtype.itemsize
    records["Metadata version"] = 0
    records["Alpha tilt"] = tilts_deg
    records["Tilt axis angle"] = -84.5
    records["Pixel size X"] = pixel_m
    records["Pixel size Y"] = pixel_m
    records["Defocus"] = defocus_m
    records["HT"] = 300000.0
    records["Dose"] = 3.0e20  # electrons per m² = 3 e/Å²
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros((len(tilts_deg), 8, 8), dtype=np.float32))
        mrc.set_extended_header(records)
        mrc.header.exttyp = b"FEI1"
        mrc.voxel_size = 0.0
    return path


def test_fei_extended_header_values_and_pixel_size(tmp_path):
    path = _fei_stack(tmp_path / "epu.mrc", [-3.0, 0.0, 3.0])
    records = mrc_extended_header(path)
    assert [r["tilt_deg"] for r in records] == [-3.0, 0.0, 3.0]
    assert records[0]["pixel_size_a"] == pytest.approx(2.5)
    assert records[0]["defocus_a"] == pytest.approx(30000.0)
    assert records[0]["voltage_kv"] == pytest.approx(300.0)
    assert records[0]["dose_e_a2"] == pytest.approx(3.0)
    assert records[0]["tilt_axis_deg"] == pytest.approx(-84.5)
    # no voxel size in the main header: the pixel size comes from the extended header
    assert mrc_header_info(path)["pixel_size_a"] == pytest.approx(2.5)
    assert read_mrc(path)[1] == pytest.approx(2.5)


def test_plain_mrc_has_no_extended_records(tmp_path):
    path = write_mrc(tmp_path / "plain.mrc", np.ones((4, 4), np.float32), 1.7)
    assert mrc_extended_header(path) == []
    assert read_mrc(path)[1] == pytest.approx(1.7, rel=1e-6)
