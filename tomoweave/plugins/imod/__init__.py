"""IMOD programs as ``imod.*`` protocols (offered where IMOD is installed: TOMOWEAVE_IMOD,
programs.toml or PATH; $IMOD_DIR/bin is the usual folder). Command lines follow the programs'
man pages (https://bio3d.colorado.edu/imod/doc/man/); their outputs are read by
``formats.imod`` and ``formats.ctffind``."""
