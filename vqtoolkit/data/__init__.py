"""Datasets as in-memory tensors (or streamed folders), and image files in and out."""

from vqtoolkit.data.datasets import ImageDataset, load_dataset

__all__ = ["ImageDataset", "load_dataset"]
