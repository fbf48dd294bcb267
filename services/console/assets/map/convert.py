#!/usr/bin/env python3
"""Converts Natural Earth country outlines (world-atlas's TopoJSON) into
nordic.txt: one ring per line, `CC lon,lat lon,lat ...`, degrees to four
decimals (about 10 m), for DK, FI, NO and SE.

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python3 convert.py package/countries-10m.json > nordic.txt
"""
import json
import sys

# ISO 3166-1 numeric codes, as world-atlas names its countries.
COUNTRIES = {"208": "DK", "246": "FI", "578": "NO", "752": "SE"}


def main(path):
    topo = json.load(open(path))
    scale = topo["transform"]["scale"]
    translate = topo["transform"]["translate"]

    def arc(i):
        # Quantized, delta-encoded arcs; a negative index is the reversed arc ~i.
        points, x, y = [], 0, 0
        for dx, dy in topo["arcs"][i if i >= 0 else ~i]:
            x, y = x + dx, y + dy
            points.append((x * scale[0] + translate[0], y * scale[1] + translate[1]))
        return points if i >= 0 else points[::-1]

    def ring(arcs):
        points = []
        for i in arcs:
            a = arc(i)
            points.extend(a if not points else a[1:])
        return points

    for g in topo["objects"]["countries"]["geometries"]:
        code = COUNTRIES.get(g.get("id"))
        if code is None:
            continue
        polygons = g["arcs"] if g["type"] == "MultiPolygon" else [g["arcs"]]
        for polygon in polygons:
            for r in polygon:
                out, last = [], None
                for lon, lat in ring(r):
                    p = f"{lon:.4f},{lat:.4f}"
                    if p != last:
                        out.append(p)
                        last = p
                if len(out) >= 3:
                    print(code, " ".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
