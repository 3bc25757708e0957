"""Chapter 08's bubble chart is honest: area ∝ training memory (not affine), no made-up x for
the probe, and names of nearby bubbles do not sit on top of each other."""
import matplotlib

matplotlib.use("agg")

import numpy as np  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from pedagogy_lib.book.ch08 import figures as F  # noqa: E402


def _res():
    def m(pct, mean, std, mb):
        return {"pct": pct, "mean": mean, "std": std, "memory": {"total": mb * 1e6}}
    return {"budget": {"n_train": 64, "seeds": [0, 1]},
            "methods": {"probe": m(0.0, 0.88, 0.01, 50), "full": m(100.0, 0.91, 0.01, 400),
                        "houlsby": m(0.40, 0.90, 0.01, 120), "pfeiffer": m(0.42, 0.901, 0.01, 110),
                        "lora": m(0.30, 0.905, 0.01, 100)}}


def test_bubble_area_is_proportional_to_memory_and_the_probe_is_a_line():
    fig = F.bubbles(_res())
    left = fig.axes[0]
    sizes = [c.get_sizes()[0] for c in left.collections if isinstance(c, PathCollection)]
    mems = [400, 120, 100, 110]  # full, houlsby, lora, pfeiffer (sorted by name), no probe
    assert len(sizes) == 4  # the probe has no bubble
    assert np.allclose(np.array(sizes) / max(sizes), np.array(mems) / max(mems))
    assert any("probe" in t.get_text() for t in left.texts)


def test_close_labels_get_boxes_that_overprint_nothing():
    """Two bubbles at nearly one place: their labels share no area with each other, with any
    bubble or with the axes' edge (the label placement of audit 7, item 12)."""
    pts = {"houlsby": (0.40, 90.0), "pfeiffer": (0.42, 90.1), "parallel": (0.41, 89.95), "full": (100.0, 91.0)}
    radius = {n: 8.0 for n in pts}
    axes, xlim, ylim = (360.0, 250.0), (0.1, 600.0), (88.0, 92.0)
    boxes = F.label_boxes(pts, radius, axes, xlim, ylim, err={n: 0.5 for n in pts})
    names = sorted(boxes)
    assert all(F._overlap(boxes[a], boxes[b]) == 0 for i, a in enumerate(names) for b in names[i + 1:])
    assert all(b[0] >= 0 and b[1] >= 0 and b[2] <= axes[0] and b[3] <= axes[1] for b in boxes.values())
    assert boxes == F.label_boxes(pts, radius, axes, xlim, ylim, err={n: 0.5 for n in pts})  # deterministic
    lx = np.log10(xlim)
    for n, (x, y) in pts.items():  # no label covers a bubble's disc (its bounding square)
        cx = (np.log10(x) - lx[0]) / (lx[1] - lx[0]) * axes[0]
        cy = (y - ylim[0]) / (ylim[1] - ylim[0]) * axes[1]
        disc = (cx - 8, cy - 8, cx + 8, cy + 8)
        assert all(F._overlap(b, disc) == 0 for b in boxes.values()), n


def test_the_stored_chart_keeps_every_label_inside_and_apart():
    fig = F.bubbles()
    left = fig.axes[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    ax = left.get_window_extent(r)
    names = [t for t in left.texts if "encoder parameters" not in t.get_text()]
    ext = [t.get_window_extent(r) for t in names]
    assert all(ax.x0 <= e.x0 and e.x1 <= ax.x1 and ax.y0 <= e.y0 and e.y1 <= ax.y1 for e in ext)
    assert not any(a.overlaps(b) for i, a in enumerate(ext) for b in ext[i + 1:])
