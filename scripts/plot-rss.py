#!/usr/bin/env python3
"""Plots a soak's RSS samples (seconds,process,rss_kib CSV) as an SVG, one line per process,
coloured by kind. Standard library only.

Usage: scripts/plot-rss.py target/soak/rss.csv docs/soak-rss.svg "title"
"""
import csv
import sys
from collections import defaultdict

src, out = sys.argv[1], sys.argv[2]
title = sys.argv[3] if len(sys.argv) > 3 else "RSS during the soak"
series = defaultdict(list)
with open(src, newline="") as f:
    for row in csv.DictReader(f):
        series[row["process"]].append((float(row["seconds"]), int(row["rss_kib"]) / 1024))


def kind(name):
    if "sidecar" in name:
        return "sidecar", "#1f77b4"
    if name.startswith("authority"):
        return "authority", "#2ca02c"
    return "Flask app", "#ff7f0e"


W, H, L, R, T, B = 900, 420, 60, 160, 40, 50
tmax = max(t for s in series.values() for t, _ in s) or 1
ymax = max(v for s in series.values() for _, v in s) * 1.1 or 1
x = lambda t: L + (W - L - R) * t / tmax
y = lambda v: H - B - (H - T - B) * v / ymax
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="22" font-size="14">{title}</text>']
for i in range(6):
    v = ymax * i / 5
    parts.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
    parts.append(f'<text x="{L - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
for i in range(6):
    t = tmax * i / 5
    parts.append(f'<text x="{x(t):.1f}" y="{H - B + 18}" text-anchor="middle">{t / 60:.1f}</text>')
parts.append(f'<text x="{(W - R + L) / 2}" y="{H - 10}" text-anchor="middle">minutes</text>')
parts.append(f'<text x="16" y="{(H - B + T) / 2}" transform="rotate(-90 16 {(H - B + T) / 2})" text-anchor="middle">RSS, MiB</text>')
seen = {}
for name, points in sorted(series.items()):
    label, colour = kind(name)
    seen[label] = colour
    step = max(1, len(points) // 240)  # at most ~240 points a line keeps the file small
    path = " ".join(f"{x(t):.0f},{y(v):.1f}" for t, v in points[::step] + points[-1:])
    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1" stroke-opacity="0.8" points="{path}"><title>{name}</title></polyline>')
for i, (label, colour) in enumerate(sorted(seen.items())):
    ly = T + 20 + 20 * i
    parts.append(f'<line x1="{W - R + 15}" x2="{W - R + 40}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
    parts.append(f'<text x="{W - R + 46}" y="{ly + 4}">{label}</text>')
parts.append("</svg>")
with open(out, "w") as f:
    f.write("\n".join(parts) + "\n")
print(f"wrote {out}: {len(series)} processes, {tmax / 60:.1f} minutes")
