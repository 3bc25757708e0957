"""Chapter 02's room: its experiment, figures, claims and exercises."""
