"""What every component is built on: the ``Component`` base, option checking and the registry."""
