#!/usr/bin/env python3
"""The original recorder's way of rendering, for scripts/bench to compare against.

numpy histogram into a 1920x1080 grid, scipy's Gaussian filter, matplotlib imshow with
the jet colour map, savefig to PNG at 1920x1080. Prints one line per size:
`reference <points> <seconds> <png bytes>` (median of the runs).
"""
import io
import statistics
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

WIDTH, HEIGHT, SIGMA = 1920, 1080, 18.0


def synthetic_points(n, seed=7):
    """Pointer-like random walks, as in crates/heatmap/examples/stages.rs."""
    rng = np.random.default_rng(seed)
    jumps = rng.random(n) < 1 / 500
    steps = rng.integers(-200, 201, size=(n, 2))
    xy = np.empty((n, 2))
    position = np.array([32768.0, 32768.0])
    for idx in range(n):
        if jumps[idx]:
            position = rng.integers(0, 65536, size=2).astype(float)
        position = np.clip(position + steps[idx], 0, 65535)
        xy[idx] = position
    return xy[:, 0] / 65536 * WIDTH, xy[:, 1] / 65536 * HEIGHT


def render(xs, ys):
    grid, _, _ = np.histogram2d(ys, xs, bins=(HEIGHT, WIDTH), range=((0, HEIGHT), (0, WIDTH)))
    smooth = gaussian_filter(grid, sigma=SIGMA)
    fig = plt.figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.imshow(np.sqrt(smooth / smooth.max()), cmap="jet", alpha=0.8)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return len(out.getvalue())


def main():
    sizes = [int(arg) for arg in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    runs = 5
    for n in sizes:
        xs, ys = synthetic_points(n)
        times, size = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            size = render(xs, ys)
            times.append(time.perf_counter() - started)
        print(f"reference {n} {statistics.median(times):.4f} {size}", flush=True)


if __name__ == "__main__":
    main()
