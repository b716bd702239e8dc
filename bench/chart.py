"""Hand-written SVG chart of a bench/run result (no plotting dependencies).

One horizontal bar group per workload; each bar is a target's median IOPS relative to
the anchor target (anchor = 1.0), labelled with the absolute IOPS and MB/s.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

PALETTE = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


def _fmt_num(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    if v >= 1e3:
        return f"{v / 1e3:.2f}k"
    return f"{v:.0f}"


def render(result: dict) -> str:
    """Returns the SVG document for `result` (the harness's JSON object)."""
    targets = [t["name"] for t in result.get("targets", [])]
    anchor = result.get("anchor")
    rows = []
    for w in result.get("workloads", []):
        per = w.get("targets", {})
        base = (per.get(anchor) or {}).get("median", {}).get("iops")
        bars = []
        for t in targets:
            m = (per.get(t) or {}).get("median", {})
            iops = m.get("iops")
            if iops is None:
                bars.append((t, None, None, None))
                continue
            ratio = iops / base if base else None
            bars.append((t, iops, m.get("mb_per_s"), ratio))
        rows.append((w["name"], w.get("client", ""), bars))

    max_ratio = 1.0
    for _, _, bars in rows:
        for _, _, _, r in bars:
            if r is not None:
                max_ratio = max(max_ratio, r)
    max_ratio *= 1.15

    left, right, top = 230, 60, 70
    plot_w = 620
    bar_h, gap, group_gap = 16, 3, 18
    n_t = max(1, len(targets))
    group_h = n_t * (bar_h + gap) + group_gap
    height = top + len(rows) * group_h + 60
    width = left + plot_w + right + 160

    def x_of(r: float) -> float:
        return left + plot_w * r / max_ratio

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    title = f"rustio bench: median IOPS relative to {anchor or 'anchor'} (= 1.0)"
    sub = (
        f"{result.get('host', {}).get('cpus', '?')} CPUs, load avg "
        f"{result.get('host', {}).get('loadavg_start', '?')} → {result.get('host', {}).get('loadavg_end', '?')}, "
        f"{result.get('config', {}).get('runs', '?')} runs × {result.get('config', {}).get('time', '?')} s, "
        f"{result.get('started', '')}"
    )
    out.append(f'<text x="{left}" y="24" font-size="16" font-weight="bold">{escape(title)}</text>')
    out.append(f'<text x="{left}" y="44" fill="#555">{escape(sub)}</text>')
    # Grid.
    step = 0.5 if max_ratio <= 4 else 1.0
    v = 0.0
    while v <= max_ratio + 1e-9:
        x = x_of(v)
        stroke = "#333" if abs(v - 1.0) < 1e-9 else "#ddd"
        dash = "" if abs(v - 1.0) < 1e-9 else ' stroke-dasharray="3,3"'
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{height - 40}" stroke="{stroke}"{dash}/>'
        )
        out.append(f'<text x="{x:.1f}" y="{height - 24}" text-anchor="middle" fill="#555">{v:g}×</text>')
        v += step
    y = top
    for name, client, bars in rows:
        out.append(f'<text x="{left - 10}" y="{y + 12}" text-anchor="end" font-weight="bold">{escape(name)}</text>')
        out.append(f'<text x="{left - 10}" y="{y + 27}" text-anchor="end" fill="#777">{escape(client)}</text>')
        for i, (t, iops, mbs, ratio) in enumerate(bars):
            by = y + i * (bar_h + gap)
            color = PALETTE[i % len(PALETTE)]
            if ratio is None:
                label = "n/a" if iops is None else f"{_fmt_num(iops)} IOPS"
                out.append(f'<text x="{left + 4}" y="{by + 12}" fill="#a00">{escape(t)}: {escape(label)}</text>')
                continue
            x1 = x_of(ratio)
            out.append(
                f'<rect x="{left}" y="{by}" width="{max(1.0, x1 - left):.1f}" height="{bar_h}" fill="{color}">'
                f"<title>{escape(t)}: {iops:.0f} IOPS, {mbs or 0:.1f} MB/s, {ratio:.2f}×</title></rect>"
            )
            label = f"{t}  {_fmt_num(iops)} IOPS  {mbs or 0:.0f} MB/s  {ratio:.2f}×"
            out.append(f'<text x="{x1 + 5:.1f}" y="{by + 12}" fill="#222">{escape(label)}</text>')
        y += group_h
    tcp = result.get("anchors", {}).get("iperf3", {}).get("median_mb_per_s")
    if tcp:
        out.append(
            f'<text x="{left}" y="{height - 6}" fill="#555">loopback TCP (iperf3, 1 stream): '
            f"{tcp:.0f} MB/s</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import json
    import sys

    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(json.load(f)))
