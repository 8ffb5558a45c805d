"""Subtomogram averaging: particle images, alignment scores, reconstruction from poses, FSC."""
