"""Chapter 06's room: its experiment, figures, claims and exercises."""
