"""Stage 1, tasks: the ``Task`` record and its files, the offline suite and its drawings, the GTA and GAIA
formats and their answer rules."""
