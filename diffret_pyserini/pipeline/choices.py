"""The automatic choices of a run, as one table under the main results: what was taken, what would have been
kept without a sure dev gain (the anchor), the dev figures, the gain's bootstrap interval and why.

Pure formatting over the records the choices leave (alpha.json rows, search.fusion.Choice.to_json()).
"""
from __future__ import annotations

from typing import Mapping

__all__ = ["alpha_evidence", "evidence_table"]


def alpha_evidence(record: Mapping, prefix: str = "") -> dict[str, dict]:
    """{'<prefix><hybrid> alpha': evidence} from an alpha.json record (fusion_dev.alpha_record)."""
    out = {}
    for system, row in record.get("systems", {}).items():
        if "anchor" not in row:  # a record from before the safe rule: no interval to show
            continue
        out[f"{prefix}{system} alpha"] = {"chosen": row["alpha"], "anchor": row["anchor"],
                                          "queries": len(row.get("per_query", {})), "dev": row["dev_ndcg@10"],
                                          "gain": row["gain"], "why": row["why"]}
    return out


def _figure(evidence: Mapping, option) -> str:
    value = evidence["dev"].get(str(option))
    return "-" if value is None else f"{float(value):.4f}"


def evidence_table(evidence: Mapping[str, Mapping | None], confidence: float) -> str:
    """Markdown: one row per automatic choice ({name: evidence or None}); a None is a choice made without dev
    figures, shown as such."""
    lines = ["| Choice | Taken | Anchor | Dev nDCG@10 taken / anchor | Gain over anchor "
             f"[{confidence:.0%} interval] | Dev queries | Sure |",
             "|---|---|---|---:|---:|---:|---|"]
    for name, ev in evidence.items():
        if ev is None:
            lines.append(f"| {name} | - | - | - | - | - | no dev figures |")
            continue
        chosen, anchor = ev["chosen"], ev["anchor"]
        # the best option on dev other than the anchor, taken or not
        others = [o for o in ev["gain"] if o != str(anchor)] or [str(anchor)]
        best = max(others, key=lambda o: ev["gain"][o][0])
        shown = chosen if chosen != anchor else best
        mean, lo, hi = ev["gain"][str(shown)]
        moved = chosen != anchor
        gain = f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]" + ("" if moved else f" ({shown}, not taken)")
        sure = "yes: moved" if moved else ("no: anchor kept" if mean > 0 else "nothing better")
        lines.append(f"| {name} | {chosen} | {anchor} | {_figure(ev, chosen)} / {_figure(ev, anchor)} | {gain} | "
                     f"{ev['queries']} | {sure} |")
    return "\n".join(lines)
