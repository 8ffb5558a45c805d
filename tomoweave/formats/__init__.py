"""Readers and writers of other programs' files, turning them into model objects and back."""

# Formats `tomoweave convert` writes (the names of its --to option).
CONVERSION_TARGETS = ("relion5", "relion4", "imod", "aretomo", "warp", "dynamo", "eman", "copick",
                      "ctffind")


class FormatWarning(UserWarning):
    """Something in a file that was read or written leniently (an unused malformed column, a
    value filled in); callers that have a log (protocols, the CLI) record these."""
