"""The browser GUI: ``tomoweave serve -p DIR`` (FastAPI + a static front end, no build step)."""

from tomoweave.web.app import create_app

__all__ = ["create_app"]
