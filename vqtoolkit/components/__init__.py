"""What every component is built on: the :class:`~vqtoolkit.components.base.Component` base, option
checking (:mod:`~vqtoolkit.components.options`) and the entry-point registry
(:mod:`~vqtoolkit.components.registry`)."""
