"""The article's claims, chapter by chapter, each with a computed value and a verdict."""


def table(records: list[dict]) -> str:
    """Fixed-width text: verdict and claim, then our value and the published one."""
    lines = []
    for r in records:
        lines.append(f"[{r['verdict']}] {r['claim']}")
        lines.append(f"    ours:      {r['our_value']}")
        lines.append(f"    published: {r['published_value']}  ({r['source']})")
    return "\n".join(lines)
