"""Matplotlib for protocol pictures: the non-interactive Agg backend, imported only when drawn."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (workers have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
