#!/usr/bin/env python3
"""HTTP load comparison; see bench/http-load.sh for what it measures and how to run it.

Starts MediaFlow, IPX, thumbor and nginx on free loopback ports (each in its
own session, stopped by process group on exit, whatever the exit), then:

1. rss:  one server at a time, fresh: COLD_CONNS_RSS (32) connections of cold
         thumbnails of the 24 MP sources for RSS_SECONDS; peak RSS of the
         server's whole process tree (sampled every 50 ms).
2. rounds (ROUNDS times, interleaved; the server order rotates every round):
         cold: every request a variant never made before (new width/quality),
               same URL sequence for every server;
         warm: the same small set of variants again and again, MediaFlow (from
               its memory cache) against nginx serving the very same bytes.
3. Medians over the rounds, ratios, a table on stdout, JSON + TSV in the out dir.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

STARTED = []  # Popen objects, each the leader of its own process group
PIDFILE = None  # where their PIDs are recorded for bench/http-load.sh's backstop trap


def stop_all():
    for p in STARTED:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for p in STARTED:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    STARTED.clear()
    if PIDFILE:
        open(PIDFILE, "w").close()  # all stopped: nothing left for the backstop


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def start(name, cmd, log_dir, env=None, cwd=None):
    log = open(os.path.join(log_dir, f"{name}.log"), "wb")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    STARTED.append(p)
    if PIDFILE:
        with open(PIDFILE, "a") as f:
            f.write(f"{p.pid}\n")
    return p


def wait_ready(url, proc, name, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout}s ({url})")


def fetch(url):
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def tree_rss_kb(root_pid):
    """Sum of VmRSS over root_pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class RssSampler:
    def __init__(self, pid, interval=0.05):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_kb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss_kb(self.pid))


def wrk(base_url, paths_file, start_line, conns, seconds, lua, timeout_s):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"--timeout={timeout_s}s", "-s", lua, base_url, "--",
           paths_file, str(start_line)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors",
                                             "timeouts"))
            return r
    raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")


# --- URL schemes -------------------------------------------------------------------------------

def url_mediaflow(img_id, width, quality):
    return f"/thumb/bench/{img_id}?width={width}&format=webp&quality={quality}"


def url_ipx(img_id, width, quality):
    return f"/w_{width},f_webp,q_{quality}/{img_id}.jpg"


def url_thumbor(img_id, width, quality):
    return f"/unsafe/{width}x0/filters:format(webp):quality({quality})/{img_id}.jpg"


SCHEMES = {"mediaflow": url_mediaflow, "mediaflow-b": url_mediaflow, "ipx": url_ipx, "thumbor": url_thumbor}


def cold_sequence(ids, count):
    """Distinct (id, width, quality): widths 448..575 around 512, then qualities 90, 89, … ."""
    seq = []
    for k in range(count):
        img = ids[k % len(ids)]
        width = 448 + (k // len(ids)) % 128
        quality = 90 - (k // (len(ids) * 128)) % 40
        seq.append((img, width, quality))
    return seq


def write_paths(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# --- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--mediaflow", required=True)
    ap.add_argument("--profiles", required=True)
    ap.add_argument("--ipx", required=True)
    ap.add_argument("--thumbor", required=True)
    ap.add_argument("--ports", required=True, help="comma-separated: mediaflow,ipx,thumbor,nginx")
    ap.add_argument("--jpegs", required=True, help="colon-separated cold sources")
    ap.add_argument("--big", required=True, help="colon-separated 24 MP sources")
    ap.add_argument("--servers", default="mediaflow ipx thumbor nginx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold-seconds", type=int, default=15)
    ap.add_argument("--warm-seconds", type=int, default=10)
    ap.add_argument("--cold-conns", type=int, default=8)
    ap.add_argument("--warm-conns", type=int, default=32)
    ap.add_argument("--rss-conns", type=int, default=32)
    ap.add_argument("--rss-seconds", type=int, default=20)
    ap.add_argument("--mf-env", default="", help="extra KEY=VALUE,... for MediaFlow")
    ap.add_argument("--mf-b", default="", help="a second MediaFlow binary to compare (server 'mediaflow-b')")
    ap.add_argument("--mf-b-env", default="", help="extra KEY=VALUE,... for mediaflow-b")
    ap.add_argument("--lua", required=True)
    ap.add_argument("--quality-tool", default="", help="examples/quality binary: PSNR/SSIM of each server's output")
    ap.add_argument("--machine", default="")
    ap.add_argument("--pidfile", default="")
    a = ap.parse_args()
    global PIDFILE
    PIDFILE = a.pidfile or None

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run(a)
    finally:
        stop_all()


def run(a):
    servers = a.servers.split()
    ports = dict(zip(["mediaflow", "ipx", "thumbor", "nginx", "mediaflow-b"], a.ports.split(",")))
    if a.mf_b or a.mf_b_env:
        servers.append("mediaflow-b")
    work = a.work
    if os.path.exists(work):
        shutil.rmtree(work)
    logs = os.path.join(work, "logs")
    src = os.path.join(work, "sources")  # <id>.jpg for IPX and thumbor
    mf_data = os.path.join(work, "mediaflow-data")
    originals = os.path.join(mf_data, "originals", "bench")
    mf_b_data = os.path.join(work, "mediaflow-b-data")
    www = os.path.join(work, "nginx", "www")
    for d in (logs, src, originals, www, os.path.join(work, "nginx", "tmp")):
        os.makedirs(d)

    def add_sources(paths, prefix):
        ids = []
        for i, p in enumerate(paths):
            img_id = f"{prefix}{i + 1}"
            for dst in (os.path.join(src, f"{img_id}.jpg"), os.path.join(originals, img_id)):
                shutil.copyfile(p, dst)
            if "mediaflow-b" in servers:
                os.makedirs(os.path.join(mf_b_data, "originals", "bench"), exist_ok=True)
                shutil.copyfile(p, os.path.join(mf_b_data, "originals", "bench", img_id))
            ids.append(img_id)
        return ids

    cold_ids = add_sources(a.jpegs.split(":"), "c")
    big_ids = add_sources(a.big.split(":"), "b")
    with open(os.path.join(work, "sources.tsv"), "w") as f:
        for img_id, p in zip(cold_ids + big_ids, a.jpegs.split(":") + a.big.split(":")):
            f.write(f"{img_id}\t{p}\n")

    # --- start the servers ---------------------------------------------------------------------
    procs, base = {}, {}
    for name, binary, data, extra in (("mediaflow", a.mediaflow, mf_data, a.mf_env),
                                      ("mediaflow-b", a.mf_b or a.mediaflow, mf_b_data, a.mf_b_env)):
        if name not in servers:
            continue
        env = dict(os.environ, DATA_DIR=data, PORT=ports[name], BIND_ADDR="127.0.0.1",
                   STORAGE_CONFIG_PATH=a.profiles, LOG_FORMAT="json", RUST_LOG="warn")
        for kv in filter(None, extra.split(",")):
            k, v = kv.split("=", 1)
            env[k] = v
        procs[name] = start(name, [binary], logs, env=env)
        base[name] = f"http://127.0.0.1:{ports[name]}"
    if "ipx" in servers:
        env = dict(os.environ, NODE_ENV="production")
        procs["ipx"] = start("ipx", [os.path.join(a.ipx, "node_modules", ".bin", "ipx"), "serve", "--dir", src,
                                     "--host", "127.0.0.1", "--port", ports["ipx"]], logs, env=env, cwd=a.ipx)
        base["ipx"] = f"http://127.0.0.1:{ports['ipx']}"
    if "thumbor" in servers:
        conf = os.path.join(work, "thumbor.conf")
        with open(conf, "w") as f:
            f.write(f"LOADER = 'thumbor.loaders.file_loader'\nFILE_LOADER_ROOT_PATH = '{src}'\n"
                    "STORAGE = 'thumbor.storages.no_storage'\nRESULT_STORAGE = None\n"
                    "RESPECT_ORIENTATION = True\n")
        procs["thumbor"] = start("thumbor", [a.thumbor, "-i", "127.0.0.1", "-p", ports["thumbor"], "-c", conf,
                                             "-l", "warning", "--processes", "0"], logs)
        base["thumbor"] = f"http://127.0.0.1:{ports['thumbor']}"
    if "nginx" in servers:
        ng = os.path.join(work, "nginx")
        conf = os.path.join(ng, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes auto;
pid {ng}/nginx.pid;
error_log {ng}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  types {{ image/webp webp; }}
  client_body_temp_path {ng}/tmp/body; proxy_temp_path {ng}/tmp/proxy; fastcgi_temp_path {ng}/tmp/fastcgi;
  uwsgi_temp_path {ng}/tmp/uwsgi; scgi_temp_path {ng}/tmp/scgi;
  server {{
    listen 127.0.0.1:{ports['nginx']};
    root {www};
    add_header Cache-Control "public, max-age=86400";
  }}
}}
""")
        procs["nginx"] = start("nginx", ["nginx", "-p", ng, "-c", conf, "-g", "daemon off; user root;"], logs)
        base["nginx"] = f"http://127.0.0.1:{ports['nginx']}"

    ready = {"mediaflow": "/health", "mediaflow-b": "/health", "ipx": "/", "thumbor": "/healthcheck", "nginx": "/"}
    for name, p in procs.items():
        wait_ready(base[name] + ready[name], p, name)

    # --- sanity: every server answers a WebP of the right width ----------------------------------
    cold_servers = [s for s in ("mediaflow", "ipx", "thumbor", "mediaflow-b") if s in servers]
    for name in cold_servers:
        status, ctype, body = fetch(base[name] + SCHEMES[name](cold_ids[0], 300, 80))
        if status != 200 or not body.startswith(b"RIFF") or body[8:12] != b"WEBP":
            raise RuntimeError(f"{name}: unexpected answer {status} {ctype} {body[:16]!r}")
    print(f"# servers up: {', '.join(f'{n} (pid {p.pid})' for n, p in procs.items())}", flush=True)

    # --- quality: each server's 512 px q90 WebP of every source, against a common reference -------
    results_quality = {}
    if a.quality_tool:
        qdir = os.path.join(work, "quality")
        os.makedirs(qdir)
        for img_id, source in zip(cold_ids, a.jpegs.split(":")):
            outs = []
            for name in cold_servers:
                out = os.path.join(qdir, f"{img_id}_{name}.webp")
                with open(out, "wb") as f:
                    f.write(fetch(base[name] + SCHEMES[name](img_id, 512, 90))[2])
                outs.append(out)
            q = subprocess.run([a.quality_tool, source] + outs, capture_output=True, text=True)
            for name, line in zip(cold_servers, q.stdout.strip().splitlines()):
                _, w, h, size, psnr, ssim = line.split("\t")
                results_quality.setdefault(name, []).append(
                    {"source": img_id, "size": f"{w}x{h}", "bytes": int(size), "psnr": float(psnr), "ssim": float(ssim)})
                print(f"quality {img_id} {name:<11} {w}x{h} {int(size):7d} B  PSNR {float(psnr):6.2f} dB  "
                      f"SSIM {float(ssim):.4f}", flush=True)

    paths_dir = os.path.join(work, "paths")
    os.makedirs(paths_dir)
    per_round = 20000  # far more than any server renders in one cold phase
    seq = cold_sequence(cold_ids, per_round * (a.rounds + 1))
    big_seq = cold_sequence(big_ids, per_round)
    for name in cold_servers:
        write_paths(os.path.join(paths_dir, f"cold-{name}"), [SCHEMES[name](*v) for v in seq])
        write_paths(os.path.join(paths_dir, f"big-{name}"), [SCHEMES[name](*v) for v in big_seq])

    results = {"machine": a.machine, "rounds": a.rounds, "cold": {}, "warm": {}, "rss": {},
               "quality": results_quality, "settings": vars(a)}

    # --- 1. peak RSS: 32 concurrent cold requests of 24 MP sources, fresh servers -------------------
    for name in cold_servers:
        with RssSampler(procs[name].pid) as s:
            r = wrk(base[name], os.path.join(paths_dir, f"big-{name}"), 1, a.rss_conns, a.rss_seconds, a.lua,
                    max(60, a.rss_seconds * 4))
        r["peak_rss_kb"] = s.peak
        results["rss"][name] = r
        print(f"rss   {name:<10} c={a.rss_conns} {r['rps']:7.1f} req/s  p99 {r['p99_us'] / 1000:8.0f} ms  "
              f"errors {r['errors']}  peak RSS {s.peak / 1024:6.0f} MB", flush=True)

    # --- warm set: MediaFlow's variants, the same bytes for nginx ---------------------------------
    warm_paths_mf, warm_paths_ng = [], []
    if "mediaflow" in servers:
        for img_id in cold_ids:
            for width in (256, 512, 1024):
                path = url_mediaflow(img_id, width, 90)
                status, _, body = fetch(base["mediaflow"] + path)
                assert status == 200
                name = f"{img_id}_{width}.webp"
                with open(os.path.join(www, name), "wb") as f:
                    f.write(body)
                warm_paths_mf.append(path)
                warm_paths_ng.append("/" + name)
        write_paths(os.path.join(paths_dir, "warm-mediaflow"), warm_paths_mf)
        write_paths(os.path.join(paths_dir, "warm-mediaflow-b"), warm_paths_mf)
        write_paths(os.path.join(paths_dir, "warm-nginx"), warm_paths_ng)
        if "mediaflow-b" in servers:
            for path in warm_paths_mf:
                fetch(base["mediaflow-b"] + path)
        # Check that both serve identical bytes.
        for p_mf, p_ng in zip(warm_paths_mf, warm_paths_ng):
            if "nginx" in servers and fetch(base["mediaflow"] + p_mf)[2] != fetch(base["nginx"] + p_ng)[2]:
                raise RuntimeError("nginx and MediaFlow serve different bytes")

    # --- 2. interleaved rounds -------------------------------------------------------------------
    for rnd in range(a.rounds):
        order = cold_servers[rnd % len(cold_servers):] + cold_servers[:rnd % len(cold_servers)]
        for name in order:
            with RssSampler(procs[name].pid) as s:
                r = wrk(base[name], os.path.join(paths_dir, f"cold-{name}"), 1 + (rnd + 1) * per_round,
                        a.cold_conns, a.cold_seconds, a.lua, 60)
            r["peak_rss_kb"] = s.peak
            results["cold"].setdefault(name, []).append(r)
            print(f"cold  {name:<10} round {rnd + 1}  {r['rps']:7.1f} req/s  p50 {r['p50_us'] / 1000:7.0f} ms  "
                  f"p99 {r['p99_us'] / 1000:7.0f} ms  errors {r['errors']}  peak RSS {s.peak / 1024:5.0f} MB",
                  flush=True)
        warm_order = [n for n in ("mediaflow", "nginx", "mediaflow-b") if n in servers and warm_paths_mf]
        if rnd % 2:
            warm_order.reverse()
        for name in warm_order:
            with RssSampler(procs[name].pid) as s:
                r = wrk(base[name], os.path.join(paths_dir, f"warm-{name}"), 1, a.warm_conns, a.warm_seconds,
                        a.lua, 10)
            r["peak_rss_kb"] = s.peak
            results["warm"].setdefault(name, []).append(r)
            print(f"warm  {name:<10} round {rnd + 1}  {r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1000:7.2f} ms  "
                  f"p99 {r['p99_us'] / 1000:7.2f} ms  errors {r['errors']}", flush=True)

    summarise(results, work)


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def summarise(results, work):
    lines = ["", f"# {results['machine']}", f"# medians of {results['rounds']} interleaved rounds", ""]
    lines.append("| test | server | req/s | p50 ms | p99 ms | errors | peak RSS MB |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    tsv = ["test\tserver\trps\tp50_ms\tp99_ms\terrors\tpeak_rss_mb"]
    for test in ("cold", "warm"):
        for name, runs in results[test].items():
            row = (test, name, med(runs, "rps"), med(runs, "p50_us") / 1000, med(runs, "p99_us") / 1000,
                   sum(r["errors"] for r in runs), max(r["peak_rss_kb"] for r in runs) / 1024)
            lines.append("| %s | %s | %.1f | %.1f | %.1f | %d | %.0f |" % row)
            tsv.append("%s\t%s\t%.2f\t%.2f\t%.2f\t%d\t%.1f" % row)
    for name, r in results["rss"].items():
        row = ("rss32", name, r["rps"], r["p50_us"] / 1000, r["p99_us"] / 1000, r["errors"], r["peak_rss_kb"] / 1024)
        lines.append("| %s | %s | %.1f | %.1f | %.1f | %d | %.0f |" % row)
        tsv.append("%s\t%s\t%.2f\t%.2f\t%.2f\t%d\t%.1f" % row)
    if results["quality"]:
        lines.append("")
        lines.append("| server | median PSNR dB (512 px q90 WebP vs common reference) | median SSIM | median bytes |")
        lines.append("| --- | ---: | ---: | ---: |")
        for name, qs in results["quality"].items():
            lines.append("| %s | %.2f | %.4f | %d |" % (name, statistics.median(q["psnr"] for q in qs),
                                                     statistics.median(q["ssim"] for q in qs),
                                                     statistics.median(q["bytes"] for q in qs)))
    lines.append("")
    cold, warm = results["cold"], results["warm"]
    ratios = {}
    if "mediaflow" in cold:
        for peer in ("ipx", "thumbor"):
            if peer in cold:
                # Ratio of medians, and the median of the per-round ratios (rounds are interleaved).
                per_round = [m["rps"] / p["rps"] for m, p in zip(cold["mediaflow"], cold[peer])]
                ratios[f"cold req/s mediaflow/{peer}"] = statistics.median(per_round)
                ratios[f"cold p99 mediaflow/{peer}"] = med(cold["mediaflow"], "p99_us") / med(cold[peer], "p99_us")
    if "mediaflow" in warm and "nginx" in warm:
        per_round = [m["rps"] / n["rps"] for m, n in zip(warm["mediaflow"], warm["nginx"])]
        ratios["warm req/s mediaflow/nginx"] = statistics.median(per_round)
    for test in ("cold", "warm"):
        if "mediaflow" in results[test] and "mediaflow-b" in results[test]:
            per_round = [b["rps"] / m["rps"] for m, b in zip(results[test]["mediaflow"], results[test]["mediaflow-b"])]
            ratios[f"{test} req/s mediaflow-b/mediaflow"] = statistics.median(per_round)
    if "mediaflow" in results["rss"]:
        ratios["peak RSS MB mediaflow, 32 cold 24 MP"] = results["rss"]["mediaflow"]["peak_rss_kb"] / 1024
    for k, v in ratios.items():
        lines.append(f"{k}: {v:.2f}")
    results["ratios"] = ratios
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(work, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(work, "summary.tsv"), "w") as f:
        f.write("\n".join(tsv) + "\n")
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
