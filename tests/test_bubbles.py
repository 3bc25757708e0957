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


def test_close_labels_get_different_offsets():
    off = F._label_offsets({"houlsby": (0.40, 90.0), "pfeiffer": (0.42, 90.1), "full": (100.0, 91.0)})
    assert off["houlsby"] != off["pfeiffer"]
    assert off["full"] == F.LABEL_OFFSETS[0]
