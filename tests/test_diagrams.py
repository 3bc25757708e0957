"""The dataflow diagrams are registered figures that `make figures` rebuilds."""
import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402


def test_diagrams_are_registered_and_drawn(tmp_path, monkeypatch):
    from pedagogy_lib import figures
    from pedagogy_lib.figures import ch07  # noqa: F401  (importing the chapter module registers them)

    monkeypatch.setattr(figures, "FIGURES_DIR", tmp_path)
    for name in ("05_where_methods_sit", "07_qlora_layer"):
        assert name in figures.REGISTRY
        fig = figures.REGISTRY[name]()
        assert len(fig.axes[0].patches) > 10
        plt.close(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["05_where_methods_sit.png", "07_qlora_layer.png"]
