"""Where and how training steps run, in both stages: devices, processes, threads, schedules, stops."""
