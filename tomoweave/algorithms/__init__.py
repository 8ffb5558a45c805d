"""Numeric kernels: plain arrays in, arrays out. Nothing here knows of projects or protocols."""
