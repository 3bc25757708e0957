"""Each chapter's stored results as the other chapters read them (one module per chapter).

Shared book-level modules, below the rooms: they load ``chapters/results/*.json`` through
``pedagogy_lib.results`` and compute from it what another chapter's claims or the shared
sentence judges (``book.sentences``) need, and they import no room. A room reads another
chapter's results only through here (``tests/test_layers.py``).
"""
