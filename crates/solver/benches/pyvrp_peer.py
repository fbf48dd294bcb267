"""PyVRP on the same Solomon-format instances, for the peer comparison in
the solver's benchmark: distances and durations scaled by 1000, durations
rounded up, as `benches/solomon.rs` does (there by 10 000).

Usage: python pyvrp_peer.py SECONDS FILE... (prints one line per instance
and writes pyvrp_SECONDS_N.json in OUT_DIR, default the current folder).
"""
import os
import sys, math, json
from pyvrp import Model
from pyvrp.stop import MaxRuntime
S = 1000
secs = float(sys.argv[1]); out = {}
for path in sys.argv[2:]:
    lines = [l.split() for l in open(path) if l.strip() and l.strip()[0].isdigit()]
    nveh, cap = int(lines[0][0]), int(lines[0][1])
    pts = [list(map(float, p)) for p in lines[1:]]
    xy = [(p[1], p[2]) for p in pts]
    m = Model()
    locs = [m.add_location(int(p[1]), int(p[2])) for p in pts]
    dep = m.add_depot(locs[0])
    m.add_vehicle_type(num_available=nveh, capacity=cap, start_depot=dep, end_depot=dep,
                       tw_early=int(pts[0][4] * S), tw_late=int(pts[0][5] * S))
    for p, loc in zip(pts[1:], locs[1:]):
        m.add_client(loc, delivery=int(p[3]), service_duration=int(p[6] * S),
                     tw_early=int(p[4] * S), tw_late=int(p[5] * S))
    for i, a in enumerate(locs):
        for j, b in enumerate(locs):
            d = math.dist(xy[i], xy[j]) * S
            m.add_edge(a, b, distance=round(d), duration=math.ceil(d - 1e-6))
    res = m.solve(stop=MaxRuntime(secs), seed=1, display=False)
    d = res.best.distance() / S
    name = path.rsplit('/', 1)[-1][:-4]
    out[name] = d
    print(f"{name} {d:.2f} feasible={res.best.is_feasible()} routes={res.best.num_routes()}", flush=True)
out_dir = os.environ.get("OUT_DIR", ".")
json.dump(out, open(os.path.join(out_dir, f"pyvrp_{sys.argv[1]}_{len(out)}.json"), "w"))
