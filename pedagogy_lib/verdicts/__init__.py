"""The article's claims, chapter by chapter, each with a computed value and a verdict."""

VERDICTS = ("holds", "approximately", "wrong", "untestable-here")


def record(chapter: str, id_: str, claim: str, verdict: str, our_value: str, published_value: str,
           source: str) -> dict:
    """One claim record of the ledger (``pedagogy_lib.claims``); chapters bind their number."""
    assert verdict in VERDICTS, verdict
    return {"id": id_, "chapter": chapter, "claim": claim, "verdict": verdict, "our_value": our_value,
            "published_value": published_value, "source": source}


def table(records: list[dict]) -> str:
    """Fixed-width text: verdict and claim, then our value and the published one."""
    lines = []
    for r in records:
        lines.append(f"[{r['verdict']}] {r['claim']}")
        lines.append(f"    ours:      {r['our_value']}")
        lines.append(f"    published: {r['published_value']}  ({r['source']})")
    return "\n".join(lines)
