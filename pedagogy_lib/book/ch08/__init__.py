"""Chapter 08's room: its experiment, figures, claims and exercises."""
