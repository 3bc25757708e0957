"""pedagogy_lib: the small reference library behind the book *PEFT from scratch*.

NumPy layers with hand-written gradients, the PEFT methods built on them, their
PyTorch twins, and the plumbing the chapters use (figures, exercise checkers,
``show_source``).  Import the submodule you need, e.g. ``from pedagogy_lib import nn``;
importing the package itself is cheap and loads neither NumPy nor torch.
"""

__version__ = "0.1.0"

import logging as _logging


class _DropKernelsNotice(_logging.Filter):
    """bitsandbytes' CPU backend logs, at import, that the optional ``kernels`` package
    (which would fetch a kernel from the Hugging Face Hub) is missing; the book is offline
    and uses bnb's built-in CPU path instead, so that one line is dropped. Installed when
    the package is imported, because peft and transformers import bitsandbytes too."""

    def filter(self, record):
        return "kernels-community" not in record.getMessage()


_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropKernelsNotice())
