"""Chapter 04's room: its experiment, figures, claims and exercises."""
