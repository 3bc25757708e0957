"""Chapter 00's room: its experiment, figures, claims and exercises."""
