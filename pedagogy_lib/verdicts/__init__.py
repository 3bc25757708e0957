"""The article's claims, chapter by chapter, each with a computed value and a verdict."""
