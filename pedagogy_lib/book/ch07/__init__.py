"""Chapter 07's room: its experiment, figures, claims and exercises."""
