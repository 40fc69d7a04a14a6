"""Figures for the book: one look across chapters.

Fields are drawn with a diverging colour map centred on zero when they change sign, errors in
the three spectral bands always in the same three colours (:data:`BAND_COLORS`), and every
figure that shows committed results carries the provenance line of :func:`physfm.results.describe`.

Fields that evolve are shown two ways that both work in the static book, without a kernel:
:func:`animate`, a matplotlib player of one or several panels sharing a time slider, and
:func:`explore`, an ipywidgets explorer over samples, fields and time whose controls are linked
in the browser (``widgets.jslink``); the book serves the widgets' JavaScript itself
(:mod:`physfm.sphinxext`).
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
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


Frames = torch.Tensor | np.ndarray


def _colour_scale(arrays: Sequence[np.ndarray], cmap: str | None) -> tuple[str, float, float]:
    """One colour scale for ``arrays``: red-blue and symmetric about zero when the values change
    sign, viridis from the smallest to the largest value otherwise (as :func:`show_fields`)."""
    lo = min(float(np.nanmin(a)) for a in arrays)
    hi = max(float(np.nanmax(a)) for a in arrays)
    diverging = lo < 0 < hi
    if diverging:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    if not hi > lo:  # a constant field: any non-empty range shows it
        lo, hi = lo - 1.0, hi + 1.0
    return cmap or ("RdBu_r" if diverging else "viridis"), lo, hi


# Frames embedded in a page are stored with a palette: the colour map in PALETTE_COLOURS colours
# (as the fields are drawn) and 256 - PALETTE_COLOURS greys for the axes, labels and background.
# Half the bytes of a full-colour PNG or less, and every pixel of a field keeps its exact colour.
PALETTE_COLOURS = 224


def _field_cmap(cmap: str):
    """``cmap`` with :data:`PALETTE_COLOURS` colours: the colours a palette frame holds exactly."""
    return plt.get_cmap(cmap).resampled(PALETTE_COLOURS)


def _palette_png(png: bytes, cmap: str) -> bytes:
    """``png``, drawn with :func:`_field_cmap`, as a PNG with a palette of that colour map and greys."""
    from PIL import Image

    colours = _field_cmap(cmap)(np.linspace(0, 1, PALETTE_COLOURS))[:, :3]
    greys = np.repeat(np.linspace(0, 1, 256 - PALETTE_COLOURS)[:, None], 3, axis=1)
    palette = Image.new("P", (1, 1))
    palette.putpalette(np.round(255 * np.concatenate([colours, greys])).astype(np.uint8).ravel().tolist())
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE).save(
        out, format="png", optimize=True
    )
    return out.getvalue()


# a frame of matplotlib's HTML player: base64 lines joined by JavaScript line continuations
_JS_FRAME = re.compile(r'(frames\[\d+\] = "data:image/png;base64,)([^"]*)(")')


def _palette_frames(player: str, cmap: str) -> str:
    """The PNG frames embedded in a ``to_jshtml`` player, each as :func:`_palette_png`."""

    def repack(m: re.Match) -> str:
        png = base64.b64decode(m.group(2).replace("\\\n", ""))
        return m.group(1) + base64.b64encode(_palette_png(png, cmap)).decode("ascii") + m.group(3)

    return _JS_FRAME.sub(repack, player)


def _panels(frames: Frames | Mapping[str, Frames], fn: str) -> dict[str, np.ndarray]:
    """``frames`` as title -> ``(time, ny, nx)`` array, checked: at least one panel, every one 3D,
    all with the same number of frames."""
    if isinstance(frames, Mapping):
        panels = {str(k): to_numpy(v) for k, v in frames.items()}
        if not panels:
            raise ValueError(f"{fn}: frames is an empty mapping; want title -> (time, ny, nx), at least one panel")
    else:
        panels = {"": to_numpy(frames)}
    for name, a in panels.items():
        if a.ndim != 3:
            what = f"frames[{name!r}]" if name else "frames"
            raise ValueError(f"{fn}: {what} must be (time, ny, nx), got shape {a.shape}")
    lengths = {name: a.shape[0] for name, a in panels.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{fn}: every panel of frames must have the same number of frames (time), got {lengths}")
    return panels


def animate(
    frames: Frames | Mapping[str, Frames],
    *,
    titles: Sequence[str] | None = None,
    interval: int = 250,
    cmap: str | None = None,
    ncols: int | None = None,
    size: float | None = None,
    dpi: int = 80,
):
    """A self-contained HTML animation with a time slider (matplotlib's ``to_jshtml``).

    It plays and scrubs in a static web page (the book) without a running kernel: every frame is
    drawn here, once, and embedded in the page as a PNG with a palette (:func:`_palette_png`).

    Args:
        frames: one field ``(time, ny, nx)``, or several as title -> ``(time, ny, nx)`` (a
            prediction beside its truth and their difference, or several samples): panels side by
            side, at most three per row, sharing the time slider. Every panel has the same number
            of frames.
        titles: one per frame, shown above the panels (above the field when there is one);
            default ``"frame i"``.
        cmap: colour map (default: red-blue, symmetric about zero, when the values change sign,
            viridis otherwise). Every panel and frame share one colour scale and one colour bar.
        ncols: panels per row, 1 to 3 (default: as many as there are panels, at most 3).
        size: inches per panel (default 3.4 for one field, 2.5 for several).
        dpi: resolution of the embedded frames.
        interval: milliseconds per frame when playing.

    Returns:
        An ``IPython.display.HTML`` player.
    """
    from IPython.display import HTML
    from matplotlib import animation

    panels = _panels(frames, "animate")
    n, length = len(panels), next(iter(panels.values())).shape[0]
    if titles is not None and len(titles) != length:
        raise ValueError(f"animate: titles has {len(titles)} entries, want one per frame ({length})")
    if ncols is None:
        ncols = min(n, 3)
    if not 1 <= ncols <= 3:
        raise ValueError(f"animate: ncols must be 1, 2 or 3 (at most three panels per row), got {ncols}")
    nrows = -(-n // ncols)
    size = size or (3.4 if n == 1 else 2.5)
    cmap, lo, hi = _colour_scale(list(panels.values()), cmap)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols + 0.7, size * nrows + 0.3), squeeze=False, layout="constrained", dpi=dpi
    )
    images = []
    for ax, (name, a) in zip(axes.flat, panels.items()):
        images.append(ax.imshow(a[0], origin="lower", cmap=_field_cmap(cmap), vmin=lo, vmax=hi, interpolation="nearest"))
        ax.set_xticks([])
        ax.set_yticks([])
        if name:
            ax.set_title(name, fontsize=9)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.colorbar(images[0], ax=axes, shrink=0.8)

    def label(i: int) -> str:
        return titles[i] if titles is not None else f"frame {i}"

    title = axes[0, 0].set_title(label(0), fontsize=9) if n == 1 and "" in panels else fig.suptitle(label(0), fontsize=10)
    arrays = list(panels.values())

    def update(i):
        for im, a in zip(images, arrays):
            im.set_data(a[i])
        title.set_text(label(i))
        return (*images, title)

    anim = animation.FuncAnimation(fig, update, frames=length, interval=interval, blit=False)
    player = HTML(_palette_frames(anim.to_jshtml(default_mode="loop"), cmap))
    plt.close(fig)
    return player


def _png_frames(a: np.ndarray, title, cmap: str | None, size: float, dpi: int) -> list[bytes]:
    """Every frame of ``a (time, ny, nx)`` drawn on one colour scale, with a colour bar and
    ``title(t)`` over it, as palette PNG bytes (:func:`_palette_png`)."""
    cmap, lo, hi = _colour_scale([a], cmap)
    fig, ax = plt.subplots(figsize=(size, size * 0.88), layout="constrained", dpi=dpi)
    im = ax.imshow(a[0], origin="lower", cmap=_field_cmap(cmap), vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.85)
    heading = ax.set_title("", fontsize=9)
    pngs = []
    for t in range(a.shape[0]):
        im.set_data(a[t])
        heading.set_text(title(t))
        drawn = io.BytesIO()
        fig.savefig(drawn, format="png", dpi=dpi)
        pngs.append(_palette_png(drawn.getvalue(), cmap))
    plt.close(fig)
    return pngs


def explore(
    trajectories: torch.Tensor | np.ndarray,
    *,
    names: Sequence[str] | None = None,
    label: str = "",
    cmap: str | None = None,
    size: float = 3.3,
    dpi: int = 80,
    interval: int = 400,
    max_images: int = 120,
):
    """An ipywidgets explorer of ``trajectories (batch, field, time, ny, nx)``: a play button and
    sliders over time and sample, a menu of fields; it works in the static book as in a live notebook.

    Every frame is drawn here, once, to a PNG (each sample and field on its own colour scale,
    the same for all its frames); the frames sit in nested ``widgets.Stack`` containers (field ->
    sample -> time) whose ``selected_index`` is tied to the controls by ``widgets.jslink``. The
    links run in the browser, so scrubbing needs no Python: a page that embeds the widget state
    (the book: Jupyter stores it when the notebook runs) works without a kernel.

    Args:
        names: one per field (default ``"field i"``).
        label: what the fields are (e.g. the system), for the frames' alt text.
        size, dpi: inches and resolution of a frame.
        interval: milliseconds per frame when playing.
        max_images: the most frames (batch x field x time) to draw: each is stored in the page.

    Returns:
        A ``widgets.VBox``: the controls (play and time in one row, sample and field in the next)
        above the frames; its attribute ``links`` holds the links.
    """
    import ipywidgets as widgets

    a = to_numpy(trajectories)
    if a.ndim != 5:
        raise ValueError(f"explore: trajectories must be (batch, field, time, ny, nx), got shape {a.shape}")
    batch, fields, length = a.shape[:3]
    if batch * fields * length > max_images:
        raise ValueError(
            f"explore: trajectories of shape {a.shape} make {batch} x {fields} x {length} = {batch * fields * length} "
            f"frames, more than max_images={max_images}: pass fewer samples or frames (e.g. trajectories[:4, :, ::2])"
        )
    names = list(names) if names is not None else [f"field {i}" for i in range(fields)]
    if len(names) != fields:
        raise ValueError(f"explore: names has {len(names)} entries, want one per field ({fields})")
    what = f"{label} " if label else ""

    def frame(png: bytes, f: int, b: int, t: int):
        alt = html.escape(f"{what}{names[f]}, sample {b}, frame {t} of {length - 1}", quote=True)
        src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        return widgets.HTML(f'<img src="{src}" alt="{alt}">')

    style = {"description_width": "initial"}  # labels as wide as their text, the rest for the slider
    time = widgets.IntSlider(0, 0, length - 1, description="frame", style=style)
    play = widgets.Play(0, min=0, max=length - 1, interval=interval)
    sample = widgets.IntSlider(0, 0, batch - 1, description="sample", style=style)
    field = widgets.Dropdown(
        options=[(name, i) for i, name in enumerate(names)], value=0, description="field", style=style, layout={"width": "auto"}
    )
    links = [widgets.jslink((play, "value"), (time, "value"))]
    by_field = []
    for f in range(fields):
        by_sample = []
        for b in range(batch):
            pngs = _png_frames(a[b, f], lambda t, b=b, f=f: f"{names[f]}, sample {b}, frame {t}", cmap, size, dpi)
            stack = widgets.Stack([frame(p, f, b, t) for t, p in enumerate(pngs)], selected_index=0)
            links.append(widgets.jslink((time, "value"), (stack, "selected_index")))
            by_sample.append(stack)
        stack = widgets.Stack(by_sample, selected_index=0)
        links.append(widgets.jslink((sample, "value"), (stack, "selected_index")))
        by_field.append(stack)
    frames = widgets.Stack(by_field, selected_index=0)
    links.append(widgets.jslink((field, "index"), (frames, "selected_index")))
    choices = ([sample] if batch > 1 else []) + ([field] if fields > 1 else [])
    controls = widgets.VBox([widgets.HBox([play, time])] + ([widgets.HBox(choices)] if choices else []))
    box = widgets.VBox([controls, frames])
    box.links = tuple(links)
    return box


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
