"""The book's upper floor: shared modules (figures, diagrams, exercises, rules, sentences, claims,
evidence/), which import no room, and one room per chapter (chNN/), which imports shared modules
and its own room only (``tests/test_layers.py``)."""
