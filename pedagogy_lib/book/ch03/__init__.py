"""Chapter 03's room: its experiment, figures, claims and exercises."""
