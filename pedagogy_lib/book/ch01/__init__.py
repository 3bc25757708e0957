"""Chapter 01's room: its experiment, figures, claims and exercises."""
