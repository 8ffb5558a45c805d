"""RELION 3.1 (Debian's ``relion`` package) as ``relion.*`` protocols.

Each protocol writes RELION's input files into the task's work folder (subtomograms through
``formats.relion_subtomograms``), runs the program with ``context.run_command`` (live log,
timeout, process-group kill, command line with RELION's path and version in the provenance)
and reads RELION's results back into tomoweave's model (``formats.relion_results``).
"""
