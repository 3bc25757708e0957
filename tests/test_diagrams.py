"""The dataflow diagrams are registered figures that `make figures` rebuilds."""
import matplotlib

matplotlib.use("agg")

from matplotlib.figure import Figure  # noqa: E402


def test_diagrams_are_registered_and_drawn(tmp_path, monkeypatch):
    from pedagogy_lib.book import __main__ as make_figures, figures
    from pedagogy_lib.book.ch07 import figures as ch07  # noqa: F401  (importing the room registers them)

    monkeypatch.setattr(figures, "FIGURES_DIR", tmp_path)
    for name in ("05_where_methods_sit", "07_qlora_layer"):
        assert name in figures.REGISTRY
        fig = figures.REGISTRY[name]()
        assert isinstance(fig, Figure) and len(fig.axes[0].patches) > 10
    assert list(tmp_path.iterdir()) == []  # builders never save; make figures does
    make_figures.build(["05_where_methods_sit", "07_qlora_layer"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["05_where_methods_sit.png", "07_qlora_layer.png"]
