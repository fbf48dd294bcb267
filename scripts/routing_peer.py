#!/usr/bin/env python3
"""Solves one Solomon-format VRPTW instance with PyVRP or VROOM, on one thread,
within a time limit, and prints the routes as JSON on stdout:

    {"solver": "pyvrp", "seconds": 5.01, "routes": [[customer, ...], ...]}

Customer numbers are the instance's node numbers (1..n). The caller checks the
routes and measures their distance itself, in double precision.

Both solvers work in integers: distances are scaled by 100 and rounded (the
objective), travel times scaled by 100 and rounded up, so every schedule a
solver finds feasible is feasible in exact arithmetic too.

    routing_peer.py pyvrp|vroom INSTANCE SECONDS
"""

import json
import math
import sys
import time

SCALE = 100


def read(path):
    with open(path) as f:
        lines = [l.split() for l in f]
    vehicles = capacity = None
    nodes = []
    i = 0
    while i < len(lines):
        l = lines[i]
        if l and l[0].upper() == "VEHICLE":
            for j in range(i + 1, len(lines)):
                if lines[j] and lines[j][0].isdigit():
                    vehicles, capacity = int(lines[j][0]), int(lines[j][1])
                    i = j
                    break
        elif l and len(l) == 7 and l[0].isdigit() and vehicles is not None:
            nodes.append([float(x) for x in l])
        i += 1
    return vehicles, capacity, nodes


def matrices(nodes):
    n = len(nodes)
    dist = [[0] * n for _ in range(n)]
    dur = [[0] * n for _ in range(n)]
    for a in range(n):
        for b in range(n):
            d = math.hypot(nodes[a][1] - nodes[b][1], nodes[a][2] - nodes[b][2])
            dist[a][b] = round(d * SCALE)
            dur[a][b] = math.ceil(d * SCALE - 1e-9)
    return dist, dur


def pyvrp(vehicles, capacity, nodes, seconds):
    from pyvrp import Model
    from pyvrp.stop import MaxRuntime

    dist, dur = matrices(nodes)
    m = Model()
    d0 = nodes[0]
    depot = m.add_depot(m.add_location(x=round(d0[1]), y=round(d0[2])),
                        tw_early=round(d0[4] * SCALE), tw_late=round(d0[5] * SCALE))
    m.add_vehicle_type(num_available=vehicles, capacity=capacity, start_depot=depot,
                       end_depot=depot, tw_early=round(d0[4] * SCALE),
                       tw_late=round(d0[5] * SCALE))
    locations = [depot]
    for c in nodes[1:]:
        loc = m.add_location(x=round(c[1]), y=round(c[2]))
        m.add_client(loc, delivery=int(c[3]), service_duration=round(c[6] * SCALE),
                     tw_early=round(c[4] * SCALE), tw_late=round(c[5] * SCALE))
    locs = m.locations
    for a in range(len(nodes)):
        for b in range(len(nodes)):
            if a != b:
                m.add_edge(locs[a], locs[b], distance=dist[a][b], duration=dur[a][b])
    result = m.solve(stop=MaxRuntime(seconds), seed=1, display=False)
    routes = [[a.idx for a in r if a.is_client()] for r in result.best.routes()]
    return routes, result.is_feasible()


def vroom_solve(vehicles, capacity, nodes, seconds):
    import datetime
    import vroom

    dist, dur = matrices(nodes)
    inp = vroom.Input()
    inp.set_durations_matrix(profile="car", matrix_input=dur)
    inp.set_costs_matrix(profile="car", matrix_input=dist)
    d0 = nodes[0]
    for v in range(vehicles):
        inp.add_vehicle(vroom.Vehicle(
            id=v + 1, start=0, end=0, capacity=[capacity],
            time_window=vroom.TimeWindow(round(d0[4] * SCALE), round(d0[5] * SCALE))))
    for i, c in enumerate(nodes[1:], start=1):
        inp.add_job(vroom.Job(
            id=i, location=i, default_service=round(c[6] * SCALE),
            delivery=vroom.Amount([int(c[3])]),
            time_windows=[vroom.TimeWindow(round(c[4] * SCALE), round(c[5] * SCALE))]))
    sol = inp.solve(exploration_level=5, nb_threads=1,
                    timeout=datetime.timedelta(seconds=seconds))
    routes = {}
    for row in sol.routes.itertuples():
        if row.type == "job":
            routes.setdefault(row.vehicle_id, []).append(int(row.id))
    unassigned = len(nodes) - 1 - sum(len(r) for r in routes.values())
    return list(routes.values()), unassigned == 0


def main():
    solver, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    vehicles, capacity, nodes = read(path)
    started = time.monotonic()
    if solver == "pyvrp":
        routes, feasible = pyvrp(vehicles, capacity, nodes, seconds)
    elif solver == "vroom":
        routes, feasible = vroom_solve(vehicles, capacity, nodes, seconds)
    else:
        sys.exit(f"{solver}: not a solver (pyvrp, vroom)")
    took = time.monotonic() - started
    json.dump({"solver": solver, "seconds": took, "routes": routes,
               "feasible": feasible}, sys.stdout)


if __name__ == "__main__":
    main()
