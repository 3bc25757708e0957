"""pedagogy_lib: the small reference library behind the book *PEFT from scratch*.

NumPy layers with hand-written gradients, the PEFT methods built on them, their
PyTorch twins, and the plumbing the chapters use (figures, exercise checkers,
``show_source``).  Import the submodule you need, e.g. ``from pedagogy_lib import nn``;
importing the package itself is cheap and loads neither NumPy nor torch.
"""

__version__ = "0.1.0"
