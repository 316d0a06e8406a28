"""Scores on one scale for every component: metrics, and sample quality judged by a dataset's classifier."""
