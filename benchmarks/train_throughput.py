"""Stage-1 training throughput: the classic VQ-VAE tutorial loop vs vqtoolkit's loop, same run.

Both train the same architecture (vqtoolkit's ``conv`` encoder/decoder, K=512, D=64, β=0.25) on real
MNIST, batch 128, for the same epochs and threads: the tutorial with its Adam 1e-3, vqtoolkit with its
defaults (the ``ema`` quantizer, Adam at a peak of 1e-2 on a cosine schedule). Runs are interleaved (tutorial,
vqtoolkit, tutorial, ...) so machine contention hits both alike. Timed: from reading the dataset files
to the last optimiser step. Scored on the MNIST test set by one shared evaluation.

Two throughput figures are printed: images per wall-clock second (the target), and images per second
of this process's CPU time, which shared machines disturb less (it still counts spin-waiting threads).

    python benchmarks/train_throughput.py --data-root ../shared/data --threads 2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ---------------------------------------------------------------------------------------------------
# The tutorial, verbatim: torchvision MNIST + ToTensor + DataLoader(shuffle=True), a VectorQuantizer
# layer that builds the full N×K distance matrix and a one-hot encodings matrix, and the usual loop.
# ---------------------------------------------------------------------------------------------------
class TutorialEncoder(nn.Module):
    def __init__(self, in_channels: int = 1, hidden: int = 64, embedding_dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, hidden, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, embedding_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TutorialDecoder(nn.Module):
    def __init__(self, out_channels: int = 1, hidden: int = 64, embedding_dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(embedding_dim, hidden, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TutorialVectorQuantizer(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float) -> None:
        super().__init__()
        self._embedding_dim = embedding_dim
        self._num_embeddings = num_embeddings
        self._embedding = nn.Embedding(self._num_embeddings, self._embedding_dim)
        self._embedding.weight.data.uniform_(-1 / self._num_embeddings, 1 / self._num_embeddings)
        self._commitment_cost = commitment_cost

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # convert inputs from BCHW -> BHWC
        inputs = inputs.permute(0, 2, 3, 1).contiguous()
        input_shape = inputs.shape
        flat_input = inputs.view(-1, self._embedding_dim)
        # Calculate distances
        distances = (
            torch.sum(flat_input**2, dim=1, keepdim=True)
            + torch.sum(self._embedding.weight**2, dim=1)
            - 2 * torch.matmul(flat_input, self._embedding.weight.t())
        )
        # Encoding
        encoding_indices = torch.argmin(distances, dim=1).unsqueeze(1)
        encodings = torch.zeros(encoding_indices.shape[0], self._num_embeddings, device=inputs.device)
        encodings.scatter_(1, encoding_indices, 1)
        # Quantize and unflatten
        quantized = torch.matmul(encodings, self._embedding.weight).view(input_shape)
        # Loss
        e_latent_loss = F.mse_loss(quantized.detach(), inputs)
        q_latent_loss = F.mse_loss(quantized, inputs.detach())
        loss = q_latent_loss + self._commitment_cost * e_latent_loss
        quantized = inputs + (quantized - inputs).detach()
        avg_probs = torch.mean(encodings, dim=0)
        perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))
        # convert quantized from BHWC -> BCHW
        return loss, quantized.permute(0, 3, 1, 2).contiguous(), perplexity, encodings


class TutorialModel(nn.Module):
    def __init__(
        self, num_embeddings: int = 512, embedding_dim: int = 64, commitment_cost: float = 0.25
    ) -> None:
        super().__init__()
        self._encoder = TutorialEncoder(1, 64, embedding_dim)
        self._vq_vae = TutorialVectorQuantizer(num_embeddings, embedding_dim, commitment_cost)
        self._decoder = TutorialDecoder(1, 64, embedding_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self._encoder(x)
        loss, quantized, perplexity, _ = self._vq_vae(z)
        x_recon = self._decoder(quantized)
        return loss, x_recon, perplexity


Timed = tuple[float, float, Callable[[Tensor], tuple[Tensor, Tensor]]]


def run_tutorial(data_root: str, epochs: int, seed: int) -> Timed:
    """Train the tutorial model; returns (wall s, CPU s, encode-decode function for the shared evaluation)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    training_data = datasets.MNIST(
        root=data_root, train=True, download=False, transform=transforms.ToTensor()
    )
    training_loader = DataLoader(training_data, batch_size=128, shuffle=True)
    model = TutorialModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=False)
    model.train()
    for _ in range(epochs):
        for data, _ in training_loader:
            optimizer.zero_grad()
            vq_loss, data_recon, _perplexity = model(data)
            recon_error = F.mse_loss(data_recon, data)
            loss = recon_error + vq_loss
            loss.backward()
            optimizer.step()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()

    def encode_decode(x: Tensor) -> tuple[Tensor, Tensor]:
        z = model._encoder(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        indices = torch.cdist(flat, model._vq_vae._embedding.weight).argmin(1)
        return model(x)[1], indices

    return seconds, cpu_seconds, encode_decode


# ---------------------------------------------------------------------------------------------------
# vqtoolkit: the same architecture through build() (its default quantizer) and the default loop.
# ---------------------------------------------------------------------------------------------------
def run_vqtoolkit(data_root: str, epochs: int, seed: int) -> Timed:
    import vqtoolkit
    from vqtoolkit.training.loop import train_autoencoder

    torch.manual_seed(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    data = vqtoolkit.load_dataset("mnist", data_root)
    model = vqtoolkit.build(
        encoder="conv", decoder="conv", prior=None, in_channels=1, dim=64, num_codes=512, beta=0.25
    ).model
    train_autoencoder(model, data.train_images, None, epochs=epochs, seed=seed, progress=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()

    def encode_decode(x: Tensor) -> tuple[Tensor, Tensor]:
        out = model(x)
        return out.reconstruction, out.quantizer.indices.reshape(-1)

    return seconds, cpu_seconds, encode_decode


@torch.inference_mode()
def evaluate(encode_decode: Callable[[Tensor], tuple[Tensor, Tensor]], test: Tensor) -> dict[str, float]:
    """Shared scoring: test MSE over every pixel, perplexity and distinct codes over all test latents."""
    from vqtoolkit.scoring import metrics

    squared, counts = 0.0, torch.zeros(512, dtype=torch.long)
    for batch in test.split(1000):
        recon, indices = encode_decode(batch)
        squared += float(F.mse_loss(recon, batch, reduction="sum"))
        counts += torch.bincount(indices, minlength=512)
    return {
        "test_mse": squared / test.numel(),
        "perplexity": metrics.perplexity(counts),
        "codes_used": metrics.codes_used(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved (tutorial, vqtoolkit) pairs.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print one JSON summary instead of a table.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from torchvision.datasets import MNIST

    test_set = MNIST(args.data_root, train=False, download=False)
    test = test_set.data.float().div(255).unsqueeze(1)
    n_train = 60_000 * args.epochs
    runs: dict[str, list[dict[str, Any]]] = {"tutorial": [], "vqtoolkit": []}
    for r in range(args.rounds):
        for name, fn in (("tutorial", run_tutorial), ("vqtoolkit", run_vqtoolkit)):
            seconds, cpu_seconds, encode_decode = fn(args.data_root, args.epochs, args.seed + r)
            result = {
                "images_per_s": n_train / seconds,
                "images_per_cpu_s": n_train / cpu_seconds,
                "seconds": seconds,
                **evaluate(encode_decode, test),
            }
            runs[name].append(result)
            if not args.json:
                print(
                    f"round {r + 1} {name:<9} {result['images_per_s']:7.0f} images/s  "
                    f"({result['images_per_cpu_s']:5.0f} per CPU-s)  "
                    f"test mse {result['test_mse']:.5f}  perplexity {result['perplexity']:6.1f}  "
                    f"codes used {result['codes_used']}",
                    flush=True,
                )

    summary = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()
    }
    speedup = summary["vqtoolkit"]["images_per_s"] / summary["tutorial"]["images_per_s"]
    cpu_speedup = summary["vqtoolkit"]["images_per_cpu_s"] / summary["tutorial"]["images_per_cpu_s"]
    summary["speedup"], summary["cpu_time_speedup"] = speedup, cpu_speedup
    summary["settings"] = {
        "epochs": args.epochs,
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"\nmedian of {args.rounds} interleaved rounds, {args.epochs} epoch(s), {args.threads} threads:")
    for name in ("tutorial", "vqtoolkit"):
        s = summary[name]
        print(
            f"  {name:<9} {s['images_per_s']:7.0f} images/s  ({s['images_per_cpu_s']:5.0f} per CPU-s)  "
            f"test mse {s['test_mse']:.5f}  "
            f"perplexity {s['perplexity']:6.1f}  codes used {s['codes_used']:.0f}"
        )
    print(
        f"  speedup   {speedup:.2f}× images/s, {cpu_speedup:.2f}× per CPU-s  "
        f"(target ≥ 1.5× at equal or better test MSE)"
    )


if __name__ == "__main__":
    main()
