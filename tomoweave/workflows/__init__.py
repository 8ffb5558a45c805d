"""Workflow YAML files shipped with tomoweave (the demo pipeline)."""
