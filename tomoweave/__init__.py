"""tomoweave: cryo-electron tomography from the microscope to the subtomogram average."""

__version__ = "0.1.0"
