"""physfm.viz: the animation player and the widget explorer that work in the static book."""

from __future__ import annotations

import base64
import io
import re

import ipywidgets as widgets
import numpy as np
import pytest
import torch
from PIL import Image

from physfm import viz


def frames_of(player) -> list[str]:
    """The frames embedded in a ``to_jshtml`` player, as data URIs."""
    return re.findall(r'frames\[(\d+)\] = "(data:image/png;base64,[^"]*)"', player.data)


def png_size(uri: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


def wave(time: int = 4, n: int = 8) -> torch.Tensor:
    x = torch.arange(float(n))
    return torch.stack([torch.sin(2 * torch.pi * (x - t) / n).expand(n, n) for t in range(time)])


def test_animate_one_field_has_a_frame_per_time():
    player = viz.animate(wave(5), titles=[f"t = {i}" for i in range(5)])
    assert [int(i) for i, _ in frames_of(player)] == list(range(5))
    assert 'type="range"' in player.data  # the time slider
    assert all(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).mode == "P" for _, uri in frames_of(player))


def test_animate_panels_share_one_player():
    truth, pred = wave(6), 0.8 * wave(6)
    one = viz.animate(truth)
    three = viz.animate({"truth": truth, "prediction": pred, "error": pred - truth})
    assert len(frames_of(three)) == 6 and three.data.count('type="range"') == 1
    (w1, _), (w3, h3) = png_size(frames_of(one)[0][1]), png_size(frames_of(three)[0][1])
    assert w3 > 1.5 * w1  # three panels side by side
    # six panels: at most three per row, so two rows, taller than one row
    six = viz.animate({f"sample {i}": wave(3) * i for i in range(6)})
    (w6, h6) = png_size(frames_of(six)[0][1])
    assert abs(w6 - w3) <= 2 and h6 > 1.7 * h3


def test_animate_rejects_bad_input_naming_the_argument():
    with pytest.raises(ValueError, match=r"animate: frames must be \(time, ny, nx\), got shape \(8, 8\)"):
        viz.animate(np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"animate: frames\['b'\] must be \(time, ny, nx\), got shape \(1, 3, 8, 8\)"):
        viz.animate({"a": wave(3), "b": np.zeros((1, 3, 8, 8))})
    with pytest.raises(ValueError, match=r"same number of frames .*'a': 3, 'b': 4"):
        viz.animate({"a": wave(3), "b": wave(4)})
    with pytest.raises(ValueError, match="frames is an empty mapping"):
        viz.animate({})
    with pytest.raises(ValueError, match=r"titles has 2 entries, want one per frame \(3\)"):
        viz.animate(wave(3), titles=["a", "b"])
    with pytest.raises(ValueError, match="ncols must be 1, 2 or 3 .* got 4"):
        viz.animate({str(i): wave(2) for i in range(4)}, ncols=4)


def test_colour_scale_is_symmetric_when_the_values_change_sign():
    assert viz._colour_scale([np.array([-1.0, 3.0])], None) == ("RdBu_r", -3.0, 3.0)
    assert viz._colour_scale([np.array([1.0, 3.0])], None) == ("viridis", 1.0, 3.0)
    cmap, lo, hi = viz._colour_scale([np.zeros(4)], "magma")
    assert cmap == "magma" and lo < 0 < hi  # a constant field still gets a range


def trajectories(batch=2, fields=2, time=3, n=8) -> torch.Tensor:
    """(batch, field, time, ny, nx), each sample and field a different multiple of a moving wave."""
    return torch.stack([torch.stack([(1 + b + 2 * f) * wave(time, n) for f in range(fields)]) for b in range(batch)])


def stacks_of(explorer):
    """The explorer's frames: field -> sample -> time, from its nested Stacks."""
    _, frames = explorer.children
    return [[list(sample.children) for sample in field.children] for field in frames.children]


def test_explore_has_a_frame_per_sample_field_and_time():
    explorer = viz.explore(trajectories(batch=2, fields=3, time=4), names=["u", "v", "w"], label="waves")
    frames = stacks_of(explorer)
    assert [[len(s) for s in f] for f in frames] == [[4, 4], [4, 4], [4, 4]]
    html = frames[2][1][3].value  # field w, sample 1, frame 3
    assert html.startswith('<img src="data:image/png;base64,') and 'alt="waves w, sample 1, frame 3 of 3"' in html
    uri = re.search(r'src="([^"]*)"', html).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).mode == "P"  # a palette PNG
    # each frame is a different picture
    assert len({frames[0][0][t].value for t in range(4)}) == 4


def link_ends(link) -> tuple:
    return (link.source[0], link.source[1], link.target[0], link.target[1])


def test_explore_links_its_controls_in_the_browser():
    explorer = viz.explore(trajectories(batch=2, fields=2, time=3))
    controls, frames = explorer.children
    (play, time), (sample, field) = (row.children for row in controls.children)
    assert isinstance(play, widgets.Play) and (play.min, play.max) == (0, 2)
    assert (time.max, sample.max) == (2, 1) and [o[0] for o in field.options] == ["field 0", "field 1"]
    # jslink: a LinkModel, which runs in the browser (a Python-side link would need a kernel)
    assert all(link._model_name == "LinkModel" for link in explorer.links)
    ends = [link_ends(link) for link in explorer.links]
    assert (play, "value", time, "value") in ends
    assert (field, "index", frames, "selected_index") in ends
    for by_sample in frames.children:
        assert (sample, "value", by_sample, "selected_index") in ends
        for by_time in by_sample.children:
            assert (time, "value", by_time, "selected_index") in ends
    assert len(ends) == 1 + 1 + 2 + 2 * 2


def test_explore_shows_only_the_controls_it_needs():
    (controls, _) = viz.explore(trajectories(batch=1, fields=1, time=2)).children
    assert [[type(c) for c in row.children] for row in controls.children] == [[widgets.Play, widgets.IntSlider]]
    (controls, _) = viz.explore(trajectories(batch=1, fields=2, time=2)).children
    assert [[type(c) for c in row.children] for row in controls.children][1] == [widgets.Dropdown]


def test_explore_rejects_bad_input_naming_the_argument():
    with pytest.raises(ValueError, match=r"explore: trajectories must be \(batch, field, time, ny, nx\), got shape \(3, 8, 8\)"):
        viz.explore(wave(3))
    with pytest.raises(ValueError, match=r"explore: names has 1 entries, want one per field \(2\)"):
        viz.explore(trajectories(), names=["u"])
    with pytest.raises(ValueError, match=r"2 x 2 x 3 = 12 frames, more than max_images=10"):
        viz.explore(trajectories(), max_images=10)
