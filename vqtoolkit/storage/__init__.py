"""Files that hold components: bundles (format and restore) and stage-1 training checkpoints.

Storage reads and writes components plus an ``info`` record; what they make together is
:mod:`vqtoolkit.model.assemble`'s job.
"""
