"""Chapter 05's room: its experiment, figures, claims and exercises."""
