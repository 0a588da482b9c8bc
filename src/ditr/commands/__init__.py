"""Sub-commands of the ``ditr`` command line, one module each (see :mod:`ditr.cli`)."""
