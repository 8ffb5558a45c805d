"""A real Dynamo table written by MATLAB (dynamotable's test data) with complex numbers in a
column tomoweave does not use: it imports, with one warning (issue 11, "valid real files are
refused"); a non-number in a used column is still refused naming line and column."""

from pathlib import Path

import numpy as np
import pytest

from tomoweave.formats import FormatWarning
from tomoweave.formats.dynamo import DynamoFormatError, read_dynamo_table

DATA = Path(__file__).parent / "data" / "dynamo"


def test_matlab_table_with_complex_unused_column_imports_with_one_warning():
    with pytest.warns(FormatWarning) as caught:
        particles = read_dynamo_table(DATA / "t_complex_first40.tbl", 15.0, (2000, 2000, 1000),
                                      DATA / "t_complex_first40.doc")
    assert len(caught) == 1 and "5 value(s)" in str(caught[0].message)
    assert "line 2, column 28, '0+1.2074e-06i'" in str(caught[0].message)
    assert len(particles) == 40
    first = particles[0]  # line 1: x y z 1018.9 759.36 641.59, shifts -1.4197 0.57826 1.5785
    expected = (np.array([1018.9 - 1.4197, 759.36 + 0.57826, 641.59 + 1.5785]) - 1
                - np.array([1000, 1000, 500])) * 15.0
    assert np.allclose(first.position_a, expected)
    assert first.tomogram == "tomo_ts01.mrc_15.00Apx" and first.name.endswith("/2")


def test_a_complex_number_in_a_used_column_is_refused(tmp_path):
    lines = (DATA / "t_complex_first40.tbl").read_text().splitlines()
    fields = lines[2].split()
    fields[23] = "0+1.2074e-06i"  # column 24: x
    lines[2] = " ".join(fields)
    (tmp_path / "bad.tbl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DynamoFormatError, match=r"bad.tbl: line 3, column 24 \(x\): expected a "
                                                r"number"):
        read_dynamo_table(tmp_path / "bad.tbl", 15.0, (2000, 2000, 1000))
