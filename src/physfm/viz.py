"""Figures for the book: one look across chapters.

Fields are drawn with a diverging colour map centred on zero when they change sign, errors in
the three spectral bands always in the same three colours (:data:`BAND_COLORS`), and every
figure that shows committed results carries the provenance line of :func:`physfm.results.describe`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from physfm.data.spectral import BANDS, band_edges, band_index, radial_spectrum

__all__ = ["spread", "BAND_COLORS", "show_fields", "band_bars", "band_map", "spectra", "volume", "animate", "explore", "to_numpy"]

BAND_COLORS = {"low": "#1b9e77", "mid": "#d95f02", "high": "#7570b3"}


def to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A detached float64 NumPy copy of ``x``."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def show_fields(
    fields: Mapping[str, torch.Tensor | np.ndarray],
    *,
    ncols: int | None = None,
    size: float = 2.6,
    cmap: str | None = None,
    shared: bool = True,
    suptitle: str | None = None,
):
    """2D fields side by side with a shared colour scale (when ``shared``) and one colour bar.

    Args:
        fields: title -> 2D array ``(ny, nx)``.
        ncols: panels per row (default: all in one row).
    """
    arrays = {k: to_numpy(v) for k, v in fields.items()}
    for name, a in arrays.items():
        if a.ndim != 2:
            raise ValueError(f"show_fields: field {name!r} must be 2D (ny, nx), got shape {a.shape}")
    n = len(arrays)
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 0.6, size * nrows), squeeze=False, layout="constrained")
    lo = min(a.min() for a in arrays.values())
    hi = max(a.max() for a in arrays.values())
    diverging = lo < 0 < hi
    if cmap is None:
        cmap = "RdBu_r" if diverging else "viridis"
    if diverging:
        lim = max(abs(lo), abs(hi))
        lo, hi = -lim, lim
    im = None
    for ax, (name, a) in zip(axes.flat, arrays.items()):
        kw = {"vmin": lo, "vmax": hi} if shared else {}
        im = ax.imshow(a, origin="lower", cmap=cmap, interpolation="nearest", **kw)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.axis("off")
    if shared and im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def band_bars(
    values: Mapping[str, Sequence[float]],
    *,
    ax=None,
    ylabel: str = "NMSE",
    log: bool = True,
):
    """Grouped bars: one group per entry of ``values`` (e.g. a prediction), one bar per band."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.5 + 1.3 * len(values), 3.2), layout="constrained")
    x = np.arange(len(values))
    width = 0.8 / len(BANDS)
    for i, band in enumerate(BANDS):
        heights = [float(v[i]) for v in values.values()]
        ax.bar(x + (i - 1) * width, heights, width, label=band, color=BAND_COLORS[band])
    ax.set_xticks(x, list(values))
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(title="band", fontsize=8)
    return ax


def band_map(shape: Sequence[int], *, ax=None):
    """The band (low, mid, high) of every Fourier mode of a 2D grid, zero wavenumber centred."""
    if len(shape) != 2:
        raise ValueError(f"band_map: shape must be 2D (ny, nx), got {tuple(shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6), layout="constrained")
    index = torch.fft.fftshift(band_index(shape)).numpy()
    ky, kx = (np.fft.fftshift(np.fft.fftfreq(n)) * 2 * np.pi for n in shape)
    cmap = plt.matplotlib.colors.ListedColormap([BAND_COLORS[b] for b in BANDS])
    im = ax.imshow(index, cmap=cmap, origin="lower", extent=[kx[0], kx[-1], ky[0], ky[-1]], vmin=-0.5, vmax=2.5)
    ax.set(title="band of each Fourier mode", xlabel="$k_x$ (rad/cell)", ylabel="$k_y$ (rad/cell)")
    cbar = ax.figure.colorbar(im, ax=ax, ticks=[0, 1, 2])
    cbar.ax.set_yticklabels(list(BANDS))
    return ax


def spectra(
    fields: Mapping[str, torch.Tensor],
    n_spatial: int,
    *,
    ax=None,
    shade_bands: bool = True,
    styles: Mapping[str, Mapping] | None = None,
):
    """Shell-summed energy spectra (:func:`physfm.data.spectral.radial_spectrum`) on log-log axes.

    Args:
        fields: label -> tensor whose last ``n_spatial`` axes are space; leading axes are averaged.
        shade_bands: shade the low, mid and high bands of The Well's spectral error.
        styles: label -> keyword arguments for ``ax.loglog`` (colour, line style...).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 3.6), layout="constrained")
    shape = None
    for label, f in fields.items():
        f = f.detach().to("cpu", torch.float64)
        shape = tuple(f.shape[-n_spatial:])
        m, energy = radial_spectrum(f - f.mean(dim=tuple(range(-n_spatial, 0)), keepdim=True), n_spatial)
        energy = energy.reshape(-1, energy.shape[-1]).mean(0)
        k = 2 * np.pi * m.numpy() / max(shape)
        ax.loglog(k[1:], energy[1:].numpy(), label=label, **(styles or {}).get(label, {}))
    if shade_bands and shape is not None:
        edges = band_edges(shape).tolist()
        k_lo = 2 * np.pi / max(shape)
        for band, lo, hi in zip(BANDS, edges[:-1], edges[1:]):
            ax.axvspan(max(lo, k_lo), min(hi, np.pi), color=BAND_COLORS[band], alpha=0.18, lw=0)
            ax.text(
                np.sqrt(max(lo, k_lo) * min(hi, np.pi)),
                1.0,
                band,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=8,
                color=BAND_COLORS[band],
            )
    ax.set(xlabel="|k| (rad/cell)", ylabel="energy per shell")
    if len(fields) > 1:
        ax.legend(fontsize=8)
    return ax


def volume(field: torch.Tensor | np.ndarray, *, title: str = "", cmap: str = "magma", size=(520, 420), ax=None):
    """A 3D scalar field ``(nx, ny, nz)`` rendered as a volume with pyvista, off-screen.

    The rendering is returned inside a matplotlib axis, so it is stored in a notebook (and in the
    book) as an ordinary PNG. No display is needed: on Linux without ``$DISPLAY`` VTK renders
    through EGL.
    """
    a = to_numpy(field)
    if a.ndim != 3:
        raise ValueError(f"volume: field must be 3D (nx, ny, nz), got shape {a.shape}")
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    pv.OFF_SCREEN = True
    grid = pv.ImageData(dimensions=np.array(a.shape) + 1)
    grid.cell_data["u"] = a.flatten(order="F")
    plotter = pv.Plotter(off_screen=True, window_size=size)
    plotter.add_volume(grid, scalars="u", cmap=cmap, opacity="sigmoid", show_scalar_bar=False)
    plotter.add_axes()
    image = plotter.screenshot(return_img=True)
    plotter.close()
    if ax is None:
        _, ax = plt.subplots(figsize=(size[0] / 110, size[1] / 110), layout="constrained")
    ax.imshow(image)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def animate(frames: torch.Tensor | np.ndarray, *, titles: Sequence[str] | None = None, interval: int = 250, cmap: str = "RdBu_r"):
    """A self-contained HTML animation with a time slider, for ``frames`` of shape ``(time, ny, nx)``.

    It plays and scrubs in a static web page (the book) without a running kernel, unlike an
    ipywidgets slider (see :func:`explore` for that, in a live notebook).
    """
    from IPython.display import HTML
    from matplotlib import animation

    a = to_numpy(frames)
    if a.ndim != 3:
        raise ValueError(f"animate: frames must be (time, ny, nx), got shape {a.shape}")
    lim = np.abs(a).max()
    fig, ax = plt.subplots(figsize=(3.6, 3.4), layout="constrained")
    im = ax.imshow(a[0], origin="lower", cmap=cmap, vmin=-lim, vmax=lim)
    ax.set_xticks([])
    ax.set_yticks([])
    title = ax.set_title(titles[0] if titles else "frame 0", fontsize=9)

    def update(i):
        im.set_data(a[i])
        title.set_text(titles[i] if titles else f"frame {i}")
        return im, title

    anim = animation.FuncAnimation(fig, update, frames=len(a), interval=interval, blit=False)
    html = HTML(anim.to_jshtml(default_mode="loop"))
    plt.close(fig)
    return html


def explore(trajectories: torch.Tensor, *, names: Sequence[str] | None = None):
    """An ipywidgets explorer for a live notebook: sliders over sample and time of
    ``(batch, field, time, ny, nx)``. Needs a running kernel (it redraws in Python)."""
    import ipywidgets as widgets

    a = to_numpy(trajectories)
    if a.ndim != 5:
        raise ValueError(f"explore: trajectories must be (batch, field, time, ny, nx), got shape {a.shape}")
    names = list(names) if names else [f"field {i}" for i in range(a.shape[1])]

    def show(sample=0, field=0, time=0):
        fig, ax = plt.subplots(figsize=(4, 3.6), layout="constrained")
        lim = np.abs(a[sample, field]).max()
        ax.imshow(a[sample, field, time], origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"{names[field]}, sample {sample}, frame {time}")
        plt.show()

    return widgets.interactive(
        show,
        sample=widgets.IntSlider(0, 0, a.shape[0] - 1),
        field=widgets.IntSlider(0, 0, a.shape[1] - 1),
        time=widgets.IntSlider(0, 0, a.shape[2] - 1),
    )


def spread(ax, x, values, *, label: str | None = None, color=None, ls="-", marker=None, alpha: float = 0.2):
    """Mean over the first axis of ``values`` ``(seed, len(x))`` as a line, min-max over seeds shaded.

    NaN entries (steps a run did not reach) are left out.
    """
    v = to_numpy(values)
    x = np.asarray(x)
    keep = ~np.isnan(v).any(axis=0)
    mean = v[:, keep].mean(axis=0)
    (line,) = ax.plot(x[keep], mean, ls=ls, marker=marker, color=color, label=label, ms=3)
    if v.shape[0] > 1:
        ax.fill_between(x[keep], v[:, keep].min(axis=0), v[:, keep].max(axis=0), color=line.get_color(), alpha=alpha, lw=0)
    return line
