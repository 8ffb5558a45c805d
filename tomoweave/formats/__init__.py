"""Readers and writers of other programs' files, turning them into model objects and back."""
