"""Writes sphere.xyz and cube.xyz, the sample clouds of tessera-point-cloud (run: python3 make_samples.py)."""
import math


def write(name, header, points):
    with open(name, "w", newline="\n") as out:
        out.write(f"# {header}; {len(points)} points, one 'x y z' per line\n")
        for x, y, z in points:
            out.write(f"{x:.4f} {y:.4f} {z:.4f}\n")


# A unit sphere's surface: 300 points on a Fibonacci lattice.
n = 300
golden = math.pi * (3 - math.sqrt(5))
sphere = []
for i in range(n):
    z = 1 - 2 * (i + 0.5) / n
    r = math.sqrt(1 - z * z)
    sphere.append((r * math.cos(golden * i), r * math.sin(golden * i), z))
write("sphere.xyz", "a sphere of radius 1 centered at the origin", sphere)

# A cube's surface, [-1, 1]^3: a 7 x 7 grid of cell centers on each of its 6 faces.
side = [-1 + (j + 0.5) * 2 / 7 for j in range(7)]
cube = []
for axis in range(3):
    for sign in (-1.0, 1.0):
        for u in side:
            for v in side:
                p = [u, v]
                p.insert(axis, sign)
                cube.append(tuple(p))
write("cube.xyz", "the surface of a cube with corners at (+-1, +-1, +-1)", cube)
