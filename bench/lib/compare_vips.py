#!/usr/bin/env python3
"""Interleaved timing of `mediaflow thumb` and `vipsthumbnail`; see bench/compare-vips.sh."""
import argparse
import os
import statistics
import subprocess
import sys
import time


def run(cmd):
    """Runs cmd; returns (wall seconds, user+sys CPU seconds). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mediaflow", required=True)
    ap.add_argument("--quality-tool", required=True)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--widths", default="256 512 1024")
    ap.add_argument("--formats", default="webp")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--tiny", default="", help="a tiny image: its time is each tool's fixed start-up cost")
    ap.add_argument("--boxes", default="",
                    help="cover crops instead of widths, e.g. '256x256:center 256x256:smart' "
                         "(vipsthumbnail -m centre|attention); no PSNR: the reference is a resize, not a crop")
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    widths = [int(w) for w in a.widths.split()]
    formats = a.formats.split()
    images = [i for i in a.images if a.only in os.path.basename(i)]
    ext = {"webp": "webp", "jpeg": "jpg", "png": "png"}

    # Fixed cost of each tool (process start, library init), measured on a tiny image, interleaved.
    mf0 = vips0 = 0.0
    if a.tiny:
        t_mf, t_vips = [], []
        for r in range(a.runs + 1):
            wall_mf, _ = run([a.mediaflow, "thumb", a.tiny, "-w", "64", "-o", os.path.join(a.out, "tiny_mediaflow.webp")])
            wall_vips, _ = run(["vipsthumbnail", a.tiny, "-s", "64x", "-o", os.path.join(a.out, "tiny_vips.webp") + "[strip]"])
            if r:
                t_mf.append(wall_mf)
                t_vips.append(wall_vips)
        mf0, vips0 = statistics.median(t_mf) * 1000, statistics.median(t_vips) * 1000
        print(f"# start-up (a {os.path.basename(a.tiny)} -> 64 px, median of {a.runs}): mediaflow {mf0:.1f} ms, "
              f"vipsthumbnail {vips0:.1f} ms; 'net' = ratio of (time - start-up)", flush=True)

    header = ("image", "format", "width", "runs", "mf_ms", "vips_ms", "ratio", "mf_cpu_ms", "vips_cpu_ms",
              "mf_bytes", "vips_bytes", "mf_psnr", "vips_psnr", "mf_ssim", "vips_ssim", "out_size", "net_ratio")
    rows = []
    print("%-34s %-4s %5s %8s %8s %6s %6s %8s %8s %8s %8s %6s %6s %7s %7s" % (
        "image", "fmt", "width", "mf ms", "vips ms", "ratio", "net", "mf cpu", "vipscpu",
        "mf B", "vips B", "mfPSNR", "vPSNR", "mfSSIM", "vSSIM"), flush=True)
    # A case: (label, width, extra mediaflow args, vipsthumbnail -s and -m args, reference-comparable).
    cases = [(str(w), w, [], ["-s", f"{w}x"], True) for w in widths]
    if a.boxes:
        cases = []
        for box in a.boxes.split():
            size, gravity = box.split(":")
            w, h = size.split("x")
            strategy = {"center": "centre", "smart": "attention"}[gravity]
            cases.append((f"{size}:{gravity}", int(w), ["--height", h, "--gravity", gravity],
                          ["-s", size, "-m", strategy], False))
    for image in images:
        name = os.path.splitext(os.path.basename(image))[0]
        for fmt in formats:
            for label, width, mf_extra, vips_size, comparable in cases:
                base = os.path.join(a.out, f"{name}_{label.replace(':', '_')}")
                mf_out = f"{base}_mediaflow.{ext[fmt]}"
                vips_out = f"{base}_vips.{ext[fmt]}"
                mf_cmd = [a.mediaflow, "thumb", image, "-w", str(width), *mf_extra, "-f", fmt, "-q", str(a.quality),
                          "-o", mf_out]
                opts = "strip" if fmt == "png" else f"Q={a.quality},strip"
                # "{W}x": W pixels across, any height (the same as mediaflow's -w); "WxH -m S": a cover crop.
                vips_cmd = ["vipsthumbnail", image, *vips_size, "-o", f"{vips_out}[{opts}]"]
                mf_t, vips_t, mf_c, vips_c = [], [], [], []
                for r in range(a.runs + 1):
                    # Alternate which goes first, so neither always follows the other.
                    order = [("mf", mf_cmd), ("vips", vips_cmd)]
                    if r % 2:
                        order.reverse()
                    for who, cmd in order:
                        wall, cpu = run(cmd)
                        if r == 0:
                            continue  # warm-up: page cache, CPU frequency
                        (mf_t if who == "mf" else vips_t).append(wall)
                        (mf_c if who == "mf" else vips_c).append(cpu)
                q = subprocess.run([a.quality_tool, image, mf_out, vips_out], capture_output=True, text=True) \
                    if comparable else None
                if q is None:
                    qual = [["", str(width), "", "", "-", "-"]] * 2
                elif q.returncode != 0:
                    print(q.stderr, file=sys.stderr)
                    qual = [["", "", "", "", "nan", "nan"]] * 2
                else:
                    qual = [line.split("\t") for line in q.stdout.strip().splitlines()]
                mf_ms = statistics.median(mf_t) * 1000
                vips_ms = statistics.median(vips_t) * 1000
                row = (name, fmt, label, a.runs, f"{mf_ms:.1f}", f"{vips_ms:.1f}", f"{mf_ms / vips_ms:.3f}",
                       f"{statistics.median(mf_c) * 1000:.1f}", f"{statistics.median(vips_c) * 1000:.1f}",
                       os.path.getsize(mf_out), os.path.getsize(vips_out), qual[0][4], qual[1][4], qual[0][5],
                       qual[1][5], f"{qual[0][1]}x{qual[0][2]}" + ("" if qual[0][1:3] == qual[1][1:3]
                                                               else f"/{qual[1][1]}x{qual[1][2]}"),
                       f"{(mf_ms - mf0) / (vips_ms - vips0):.3f}")
                rows.append(row)
                print("%-34s %-4s %5s %8s %8s %6s %6s %8s %8s %8d %8d %6s %6s %7s %7s" % (
                    name[:34], fmt, label, row[4], row[5], row[6], row[16], row[7], row[8], row[9], row[10],
                    row[11], row[12], row[13], row[14]), flush=True)
    with open(a.tsv, "w") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(v) for v in row) + "\n")
    print(f"# ratio = median mediaflow wall time / median vipsthumbnail wall time over {a.runs} interleaved runs "
          f"(process start to exit, both); cpu = median user+sys; PSNR/SSIM against a float Lanczos3 "
          f"resize of the full decode; written to {a.tsv}")


if __name__ == "__main__":
    main()
