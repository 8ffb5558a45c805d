"""Readers and writers of other programs' files, turning them into model objects and back."""

# Formats `tomoweave convert` writes (the names of its --to option).
CONVERSION_TARGETS = ("relion5", "relion4", "imod", "aretomo", "warp", "dynamo", "eman", "copick",
                      "ctffind")
