"""Stage 1: the autoencoder's options, its training loop, held-out evaluation and TensorBoard logging."""
