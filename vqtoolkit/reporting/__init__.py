"""What a run leaves to look at: training curves, code-usage plots, the HTML report, a run's files."""
