"""Where and how training steps run, for both stages: devices, processes and their collectives,
thread counts, learning-rate schedules and clean stops."""
