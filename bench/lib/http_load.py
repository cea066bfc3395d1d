#!/usr/bin/env python3
"""HTTP load comparison; see bench/http-load.sh for what it measures and how to run it.

Starts MediaFlow, IPX, thumbor and nginx on free loopback ports (each in its
own session, stopped by process group on exit, whatever the exit), then:

0. sources: every cold source photo is made into --copies byte-distinct
         copies (a JPEG COM segment, a PNG tEXt chunk, an unknown WebP chunk),
         so that no request of the cold phase finds a decoded source a real
         workload would not have: N = photos x copies distinct originals, and
         the cold sequence comes back to an original only after N requests
         (with another width). The quality step and the warm set use copies
         of their own, the rss phases copies of their own too.
1. quality: each server's 512 px q90 WebP of one copy of every photo, its
         size checked (512 px wide, or the photo's own width if smaller: any
         other size is an error) and scored against a common reference.
2. rss:  one phase per rss source (L1, L3, ...), every server restarted
         fresh for it: RSS_CONNS (32) connections of cold thumbnails of
         distinct copies for RSS_SECONDS; peak RSS of the server's whole
         process tree (sampled every 50 ms). The servers are restarted again
         after the last one.
3. rounds (ROUNDS times, interleaved; the server order rotates every round):
         cold: every request a variant never made before, of the next
               original (request k: original k mod N, width 448..575 changing
               every full pass over the originals), the same URL sequence for
               every server, each round further along it;
         warm: a small set of variants (WARM_VARIANTS, 512 px q90 WebP of
               distinct originals) again and again, MediaFlow (from its memory
               cache) against nginx serving the very same bytes.
4. Medians over the rounds, ratios, a table on stdout, JSON + TSV in the out dir.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

STARTED = []  # Popen objects, each the leader of its own process group
PIDFILE = None  # where their PIDs are recorded for bench/http-load.sh's backstop trap


def record_pids():
    if PIDFILE:
        with open(PIDFILE, "w") as f:
            f.write("".join(f"{p.pid}\n" for p in STARTED))


def stop(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    for p in procs:
        if p in STARTED:
            STARTED.remove(p)
    record_pids()


def stop_all():
    stop(list(STARTED))  # all stopped: the pidfile is left empty, nothing for the backstop


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def start(name, cmd, log_dir, env=None, cwd=None):
    log = open(os.path.join(log_dir, f"{name}.log"), "ab")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    STARTED.append(p)
    record_pids()
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


def process_tree(root_pid):
    """root_pid and all its live descendants, each with its /proc/PID/stat
    fields after the command name."""
    children, stats = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            stats[int(entry)] = fields
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid in stats:
            tree.append((pid, stats[pid]))
    return tree


def tree_rss_kb(root_pid):
    """Sum of VmRSS over root_pid and all its descendants."""
    total = 0
    for pid, _ in process_tree(root_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def tree_cpu_s(root_pid):
    """User + system CPU seconds of root_pid and all its live descendants."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in process_tree(root_pid))  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time a server (its process tree) spent during a phase. On shared
    cores throughput moves with whatever else runs; CPU per request moves
    less, so both are reported."""

    def __init__(self, pid):
        self.pid, self.seconds = pid, 0.0

    def __enter__(self):
        self._start = tree_cpu_s(self.pid)
        return self

    def __exit__(self, *exc):
        self.seconds = tree_cpu_s(self.pid) - self._start


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


# --- byte-distinct copies of a source ------------------------------------------------------------

def tag_jpeg(data, text):
    """A COM segment (FF FE, big-endian length, text) right after SOI."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    body = text.encode("ascii")
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + data[2:]


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def tag_png(data, text):
    """A tEXt chunk (keyword Comment) right after IHDR."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    return data[:end] + png_chunk(b"tEXt", b"Comment\x00" + text.encode("latin-1")) + data[end:]


def webp_chunks(data):
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    chunks, pos, end = [], 12, min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    while pos + 8 <= end:
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        chunks.append((data[pos:pos + 4], data[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def webp_file(chunks):
    body = b"WEBP" + b"".join(k + struct.pack("<I", len(c)) + c + (b"\0" if len(c) & 1 else b"") for k, c in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tag_webp(data, text):
    """An unknown chunk ("MFBC") after the image data, in an extended (VP8X) file.

    A simple file (one VP8 or VP8L chunk) becomes an extended one first: a VP8X
    chunk with the bitstream's canvas size (and alpha flag, for VP8L). libwebp
    (sharp, Pillow) and image-webp all skip unknown chunks of VP8X files; a
    chunk trailing a simple file is not something every decoder promises to
    accept."""
    chunks = webp_chunks(data)
    kinds = [k for k, _ in chunks]
    if kinds[0] != b"VP8X":
        if len(chunks) != 1 or kinds[0] not in (b"VP8 ", b"VP8L"):
            raise ValueError(f"unexpected simple WebP layout {kinds}")
        w, h, alpha = webp_bitstream_size(*chunks[0])
        vp8x = struct.pack("<B3x", 0x10 if alpha else 0) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", vp8x))
    return webp_file(chunks + [(b"MFBC", text.encode("ascii"))])


def webp_bitstream_size(kind, c):
    if kind == b"VP8 ":
        if c[3:6] != b"\x9d\x01\x2a":
            raise ValueError("bad VP8 frame")
        return struct.unpack("<H", c[6:8])[0] & 0x3FFF, struct.unpack("<H", c[8:10])[0] & 0x3FFF, False
    if kind == b"VP8L":
        bits = struct.unpack("<I", c[1:5])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    raise ValueError(f"no bitstream in {kind!r}")


def tagged_copy(data, text):
    if data[:2] == b"\xff\xd8":
        return tag_jpeg(data, text)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return tag_png(data, text)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return tag_webp(data, text)
    raise ValueError("not a JPEG, PNG or WebP")


# --- upright size of a source (what a 512 px answer is checked against) ----------------------------

def exif_orientation(tiff):
    if tiff[:6] == b"Exif\0\0":
        tiff = tiff[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if not order or len(tiff) < 8:
        return 1
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return 1
    for i in range(struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]):
        e = ifd + 2 + 12 * i
        if e + 12 > len(tiff):
            break
        if struct.unpack(order + "H", tiff[e:e + 2])[0] == 0x0112:
            return struct.unpack(order + "H", tiff[e + 8:e + 10])[0]
    return 1


def upright_size(path):
    """(width, height) after the EXIF orientation, from the headers only."""
    with open(path, "rb") as f:
        data = f.read()
    w = h = None
    orientation = 1
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data) and w is None:
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
                i += 1 if marker == 0xFF else 2
                continue
            seg = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
            elif marker == 0xE1 and data[i + 4:i + 10] == b"Exif\0\0":
                orientation = exif_orientation(data[i + 10:i + 2 + seg])
            i += 2 + seg
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        w, h = struct.unpack(">II", data[16:24])
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        for kind, c in webp_chunks(data):
            if kind == b"VP8X":
                w, h = int.from_bytes(c[4:7], "little") + 1, int.from_bytes(c[7:10], "little") + 1
            elif kind in (b"VP8 ", b"VP8L") and w is None:
                w, h, _ = webp_bitstream_size(kind, c)
            elif kind == b"EXIF":
                orientation = exif_orientation(c)
    if w is None:
        raise ValueError(f"{path}: size not found")
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def reference_caveat(path):
    """What the quality tool's reference does not model for this source (its PSNR is then low
    whatever the server does): alpha (ignored: the RGB under transparent pixels is anyone's), CMYK."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 10 <= len(data):
            if data[i] != 0xFF or data[i + 1] in (0xFF, 0x01) or 0xD0 <= data[i + 1] <= 0xD8:
                i += 1
                continue
            if 0xC0 <= data[i + 1] <= 0xCF and data[i + 1] not in (0xC4, 0xC8, 0xCC):
                return "CMYK source" if data[i + 9] == 4 else ""
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if data[25] in (4, 6) or b"tRNS" in data[:data.find(b"IDAT")]:
            return "alpha source, ignored by the reference"
    elif data[:4] == b"RIFF":
        for kind, c in webp_chunks(data):
            if kind == b"VP8X" and c[0] & 0x10 or kind == b"VP8L" and webp_bitstream_size(kind, c)[2]:
                return "alpha source, ignored by the reference"
    return ""


def expected_size(upright, width):
    """The size of a `width` px thumbnail, never upscaled: (w, h), h within 1 px."""
    uw, uh = upright
    if uw <= width:
        return uw, uh
    return width, uh * width / uw


# --- URL schemes -------------------------------------------------------------------------------
# `src` is a Source: IPX and thumbor get its file name (<id>.<ext>), MediaFlow its id.

def url_mediaflow(src, width, quality):
    return f"/thumb/bench/{src.id}?width={width}&format=webp&quality={quality}"


def url_ipx(src, width, quality):
    return f"/w_{width},f_webp,q_{quality}/{src.file}"


def url_thumbor(src, width, quality):
    # no_upscale(): like MediaFlow and IPX (sharp's withoutEnlargement), a source narrower than the
    # width asked for keeps its own size.
    return f"/unsafe/{width}x0/filters:format(webp):quality({quality}):no_upscale()/{src.file}"


SCHEMES = {"mediaflow": url_mediaflow, "mediaflow-b": url_mediaflow, "ipx": url_ipx, "thumbor": url_thumbor}


class Source:
    """One byte-distinct original, as every server has it."""

    def __init__(self, img_id, ext, photo, origin, upright, caveat):
        self.id, self.file, self.photo, self.origin, self.upright = img_id, f"{img_id}.{ext}", photo, origin, upright
        self.caveat = caveat


def cold_sequence(sources, count):
    """Distinct (source, width, quality): request k asks for source k mod N, width 448..575 (one more
    every full pass over the N sources), then qualities 90, 89, … after 128 passes."""
    n = len(sources)
    return [(sources[k % n], 448 + (k // n) % 128, 90 - (k // (n * 128)) % 40) for k in range(count)]


def write_paths(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def photo_label(path, taken):
    """L1 for .../L1_kleiber_6028x3391.jpg; unique among `taken`."""
    base = os.path.basename(path).split("_")[0].split(".")[0]
    label = "".join(ch for ch in base if ch.isalnum()) or "p"
    n, candidate = 2, label
    while candidate in taken:
        candidate, n = f"{label}{n}", n + 1
    taken.add(candidate)
    return candidate


def fmt_kb(n):
    return f"{n / 1024:.1f} KB"


# --- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--mediaflow", required=True)
    ap.add_argument("--profiles", required=True)
    ap.add_argument("--ipx", required=True)
    ap.add_argument("--thumbor", required=True)
    ap.add_argument("--ports", required=True, help="comma-separated: mediaflow,ipx,thumbor,nginx,mediaflow-b")
    ap.add_argument("--cold", required=True, help="colon-separated cold source photos (JPEG, PNG, WebP)")
    ap.add_argument("--copies", type=int, default=16, help="byte-distinct copies of each cold photo")
    ap.add_argument("--rss", required=True, help="colon-separated sources of the rss phases, one phase each")
    ap.add_argument("--rss-copies", type=int, default=128, help="byte-distinct copies of each rss source")
    ap.add_argument("--warm-variants", type=int, default=20)
    ap.add_argument("--servers", default="mediaflow ipx thumbor nginx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold-seconds", type=int, default=15)
    ap.add_argument("--warm-seconds", type=int, default=10)
    ap.add_argument("--cold-conns", type=int, default=4)
    ap.add_argument("--warm-conns", type=int, default=16)
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
    src = os.path.join(work, "sources")  # <id>.<ext> for IPX and thumbor
    mf_data = os.path.join(work, "mediaflow-data")
    mf_b_data = os.path.join(work, "mediaflow-b-data")
    originals = [os.path.join(mf_data, "originals", "bench")]
    if "mediaflow-b" in servers:
        originals.append(os.path.join(mf_b_data, "originals", "bench"))
    www = os.path.join(work, "nginx", "www")
    for d in [logs, src, www, os.path.join(work, "nginx", "tmp")] + originals:
        os.makedirs(d)

    # --- the originals: byte-distinct copies, one file each, hard-linked for MediaFlow ------------
    labels = set()
    sources_tsv = []

    def add_copies(path, label, kind, count, width=2, first_copy=0):
        with open(path, "rb") as f:
            data = f.read()
        ext = os.path.splitext(path)[1].lstrip(".").lower() or "img"
        upright, caveat = upright_size(path), reference_caveat(path)
        out = []
        for j in range(first_copy, first_copy + count):
            img_id = f"{label}-{kind}{j:0{width}d}"
            s = Source(img_id, ext, label, path, upright, caveat)
            first = os.path.join(src, s.file)
            with open(first, "wb") as f:
                f.write(tagged_copy(data, f"MediaFlow bench copy {img_id}"))
            for d in originals:
                try:
                    os.link(first, os.path.join(d, img_id))
                except OSError:
                    shutil.copyfile(first, os.path.join(d, img_id))
            sources_tsv.append(f"{img_id}\t{kind}\t{path}\t{upright[0]}x{upright[1]}")
            out.append(s)
        return out

    photos = [(p, photo_label(p, labels)) for p in a.cold.split(":")]
    cold_by_photo = [add_copies(path, label, "c", a.copies) for path, label in photos]
    # Interleaved: copy 0 of every photo, then copy 1 of every photo, … so consecutive requests are
    # different photos and an original comes back only after N requests.
    cold_srcs = [c[j] for j in range(a.copies) for c in cold_by_photo]
    # Copies of their own for the quality step (copy w0 of every photo) and the warm set (w0, w1, …
    # interleaved the same way): nothing the cold rounds ask for has been decoded before.
    extra_srcs = [add_copies(photos[k % len(photos)][0], photos[k % len(photos)][1], "w", 1, 1, k // len(photos))[0]
                  for k in range(max(a.warm_variants, len(photos)))]
    quality_srcs = extra_srcs[:len(photos)]
    warm_srcs = extra_srcs[:a.warm_variants]
    rss_sets, rss_labels = [], set()
    for path in a.rss.split(":"):
        label = photo_label(path, rss_labels)
        rss_sets.append((label, add_copies(path, label, "r", a.rss_copies, 3)))
    with open(os.path.join(work, "sources.tsv"), "w") as f:
        f.write("id\tuse\tsource\tupright\n" + "\n".join(sources_tsv) + "\n")
    print(f"# cold set: {len(cold_srcs)} distinct originals ({len(photos)} photos x {a.copies} copies); "
          f"rss: {', '.join(f'{lbl} x {len(s)} copies' for lbl, s in rss_sets)}; "
          f"quality and warm: {len(extra_srcs)} more copies", flush=True)

    # --- the servers ----------------------------------------------------------------------------
    specs = {}  # name -> (command, env, cwd, readiness path)
    for name, binary, data, extra in (("mediaflow", a.mediaflow, mf_data, a.mf_env),
                                      ("mediaflow-b", a.mf_b or a.mediaflow, mf_b_data, a.mf_b_env)):
        if name not in servers:
            continue
        env = dict(os.environ, DATA_DIR=data, PORT=ports[name], BIND_ADDR="127.0.0.1",
                   STORAGE_CONFIG_PATH=a.profiles, LOG_FORMAT="json", RUST_LOG="warn")
        for kv in filter(None, extra.split(",")):
            k, v = kv.split("=", 1)
            env[k] = v
        specs[name] = ([binary], env, None, "/health")
    if "ipx" in servers:
        specs["ipx"] = ([os.path.join(a.ipx, "node_modules", ".bin", "ipx"), "serve", "--dir", src,
                         "--host", "127.0.0.1", "--port", ports["ipx"]], dict(os.environ, NODE_ENV="production"),
                        a.ipx, "/")
    if "thumbor" in servers:
        conf = os.path.join(work, "thumbor.conf")
        with open(conf, "w") as f:
            f.write(f"LOADER = 'thumbor.loaders.file_loader'\nFILE_LOADER_ROOT_PATH = '{src}'\n"
                    "STORAGE = 'thumbor.storages.no_storage'\nRESULT_STORAGE = None\n"
                    "RESPECT_ORIENTATION = True\n")
        specs["thumbor"] = ([a.thumbor, "-i", "127.0.0.1", "-p", ports["thumbor"], "-c", conf, "-l", "warning",
                             "--processes", "0"], None, None, "/healthcheck")
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
        specs["nginx"] = (["nginx", "-p", ng, "-c", conf, "-g", "daemon off; user root;"], None, None, "/")

    procs, base = {}, {name: f"http://127.0.0.1:{ports[name]}" for name in specs}

    def launch(names):
        for name in names:
            cmd, env, cwd, _ = specs[name]
            procs[name] = start(name, cmd, logs, env=env, cwd=cwd)
        for name in names:
            wait_ready(base[name] + specs[name][3], procs[name], name)

    def restart(names):
        """Fresh processes: the next phase's peak RSS owes nothing to the previous one."""
        stop([procs[n] for n in names])
        launch(names)

    launch(list(specs))

    # --- sanity: every server answers a WebP ----------------------------------------------------
    cold_servers = [s for s in ("mediaflow", "ipx", "thumbor", "mediaflow-b") if s in servers]
    for name in cold_servers:
        status, ctype, body = fetch(base[name] + SCHEMES[name](quality_srcs[0], 300, 80))
        if status != 200 or not body.startswith(b"RIFF") or body[8:12] != b"WEBP":
            raise RuntimeError(f"{name}: unexpected answer {status} {ctype} {body[:16]!r}")
    print(f"# servers up: {', '.join(f'{n} (pid {p.pid})' for n, p in procs.items())}", flush=True)

    # --- quality: each server's 512 px q90 WebP of one copy of every photo -------------------------
    # The size is checked (512 px wide, or the photo's own width if narrower; the height within 1 px
    # of the photo's aspect ratio): anything else is an error, and so is an answer that is not a WebP.
    results_quality, wrong = {}, []
    qdir = os.path.join(work, "quality")
    os.makedirs(qdir)
    for s in quality_srcs:
        ew, eh = expected_size(s.upright, 512)
        outs = []
        for name in cold_servers:
            out = os.path.join(qdir, f"{s.id}_{name}.webp")
            try:
                status, ctype, body = fetch(base[name] + SCHEMES[name](s, 512, 90))
            except urllib.error.HTTPError as e:
                status, ctype, body = e.code, e.headers.get("Content-Type"), b""
            with open(out, "wb") as f:
                f.write(body)
            try:
                w, h = upright_size(out) if body[:4] == b"RIFF" and body[8:12] == b"WEBP" else (None, None)
            except ValueError:
                w, h = None, None
            if status != 200 or w is None:
                wrong.append(f"{name} {s.id}: {status} {ctype}, not a WebP")
            elif w != ew or abs(h - eh) > 1:
                wrong.append(f"{name} {s.id}: {w}x{h}, expected {ew}x{round(eh)} (photo {s.upright[0]}x{s.upright[1]})")
            outs.append((name, out, w, h, len(body)))
        scores = {}
        if a.quality_tool and all(o[2] for o in outs):
            q = subprocess.run([a.quality_tool, s.origin] + [o[1] for o in outs], capture_output=True, text=True)
            if q.returncode != 0:
                raise RuntimeError(f"{a.quality_tool} {s.origin} failed: {q.stderr.strip()}")
            for (name, *_), line in zip(outs, q.stdout.strip().splitlines()):
                _, _, _, _, psnr, ssim = line.split("\t")
                scores[name] = (float(psnr), float(ssim))
        for name, _, w, h, size in outs:
            psnr, ssim = scores.get(name, (float("nan"), float("nan")))
            results_quality.setdefault(name, []).append(
                {"source": s.id, "photo": s.origin, "size": f"{w}x{h}", "expected": f"{ew}x{round(eh)}",
                 "bytes": size, "psnr": psnr, "ssim": ssim, "caveat": s.caveat})
            print(f"quality {s.photo:<4} {name:<11} {w}x{h} {size:7d} B  PSNR {psnr:6.2f} dB  SSIM {ssim:.4f}"
                  + ("" if w is not None and w == ew and abs(h - eh) <= 1 else f"  WRONG SIZE (expected {ew}x{round(eh)})")
                  + (f"  ({s.caveat})" if s.caveat else ""), flush=True)
    for name, qs in results_quality.items():
        psnrs = [q["psnr"] for q in qs if q["psnr"] == q["psnr"]]
        plain = [q["psnr"] for q in qs if q["psnr"] == q["psnr"] and not q["caveat"]]
        if psnrs:
            print(f"quality median {name:<11} PSNR {statistics.median(psnrs):6.2f} dB  "
                  f"SSIM {statistics.median(q['ssim'] for q in qs if q['ssim'] == q['ssim']):.4f}  "
                  f"({len(psnrs)} photos, 512 px q90 WebP against the common reference"
                  + (f"; {statistics.median(plain):.2f} dB over the {len(plain)} without a caveat)"
                     if plain and len(plain) < len(psnrs) else ")"), flush=True)
    # A peer's wrong answer is its own behaviour (IPX 3 does not apply EXIF
    # orientation): reported, and its PSNR counts as what a user would get.
    # MediaFlow's must be right.
    ours = [w for w in wrong if w.startswith("mediaflow")]
    for w in wrong:
        print(f"# WRONG ANSWER: {w}", flush=True)
    if ours:
        raise RuntimeError("MediaFlow gave wrong answers in the quality step:\n  " + "\n  ".join(ours))

    # --- URL lists (bench/lib/paths.lua walks them, one line per request) ---------------------------
    paths_dir = os.path.join(work, "paths")
    os.makedirs(paths_dir)
    per_round = 20000  # far more than any server renders in one cold phase
    seq = cold_sequence(cold_srcs, per_round * (a.rounds + 1))
    rss_seqs = {label: cold_sequence(srcs, per_round) for label, srcs in rss_sets}
    for name in cold_servers:
        write_paths(os.path.join(paths_dir, f"cold-{name}"), [SCHEMES[name](*v) for v in seq])
        for label, rseq in rss_seqs.items():
            write_paths(os.path.join(paths_dir, f"rss-{label}-{name}"), [SCHEMES[name](*v) for v in rseq])

    results = {"machine": a.machine, "rounds": a.rounds, "cold": {}, "warm": {}, "rss": {},
               "quality": results_quality, "settings": vars(a),
               "cold_set": {"photos": [p for p, _ in photos], "copies": a.copies, "originals": len(cold_srcs),
                            "conns": a.cold_conns},
               "rss_sets": {label: {"source": srcs[0].origin, "copies": len(srcs)} for label, srcs in rss_sets}}

    def again(r, n):
        """When a phase asked for more than its n originals: how soon one came back."""
        return f"  ({r['requests']} requests; an original again after {n}, ~{n / r['rps']:.1f} s)" \
            if r["requests"] > n and r["rps"] else f"  ({r['requests']} requests, {n} originals)"

    # --- peak RSS: RSS_CONNS concurrent cold requests of distinct copies, one phase per source -------
    for label, srcs in rss_sets:
        restart(cold_servers)
        for name in cold_servers:
            with RssSampler(procs[name].pid) as s:
                r = wrk(base[name], os.path.join(paths_dir, f"rss-{label}-{name}"), 1, a.rss_conns, a.rss_seconds,
                        a.lua, max(60, a.rss_seconds * 4))
            r["peak_rss_kb"] = s.peak
            results["rss"].setdefault(label, {})[name] = r
            print(f"rss   {label:<3} {name:<11} c={a.rss_conns} {r['rps']:7.1f} req/s  p99 {r['p99_us'] / 1000:8.0f} ms  "
                  f"errors {r['errors']}  peak RSS {s.peak / 1024:6.0f} MB" + again(r, len(srcs)), flush=True)
    if rss_sets:
        restart(cold_servers)

    # --- warm set: MediaFlow's variants, the same bytes for nginx ---------------------------------
    warm_paths_mf, warm_paths_ng, warm_sizes = [], [], []
    if "mediaflow" in servers:
        for s in warm_srcs:
            path = url_mediaflow(s, 512, 90)
            status, _, body = fetch(base["mediaflow"] + path)
            assert status == 200
            name = f"{s.id}_512.webp"
            with open(os.path.join(www, name), "wb") as f:
                f.write(body)
            warm_paths_mf.append(path)
            warm_paths_ng.append("/" + name)
            warm_sizes.append(len(body))
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
        results["warm_set"] = {"variants": len(warm_sizes), "median_bytes": statistics.median(warm_sizes),
                               "min_bytes": min(warm_sizes), "max_bytes": max(warm_sizes)}
        print(f"# warm set: {len(warm_sizes)} variants (512 px q90 WebP of {len(warm_sizes)} distinct originals), "
              f"median {fmt_kb(statistics.median(warm_sizes))} ({fmt_kb(min(warm_sizes))} to "
              f"{fmt_kb(max(warm_sizes))})", flush=True)

    # --- interleaved rounds ----------------------------------------------------------------------
    for rnd in range(a.rounds):
        order = cold_servers[rnd % len(cold_servers):] + cold_servers[:rnd % len(cold_servers)]
        for name in order:
            with RssSampler(procs[name].pid) as s, CpuMeter(procs[name].pid) as cpu:
                r = wrk(base[name], os.path.join(paths_dir, f"cold-{name}"), 1 + (rnd + 1) * per_round,
                        a.cold_conns, a.cold_seconds, a.lua, 60)
            r["peak_rss_kb"] = s.peak
            r["cpu_us_per_req"] = cpu.seconds * 1e6 / max(r["requests"], 1)
            results["cold"].setdefault(name, []).append(r)
            print(f"cold  {name:<11} round {rnd + 1}  {r['rps']:7.1f} req/s  p50 {r['p50_us'] / 1000:7.0f} ms  "
                  f"p99 {r['p99_us'] / 1000:7.0f} ms  errors {r['errors']}  peak RSS {s.peak / 1024:5.0f} MB  "
                  f"CPU {r['cpu_us_per_req'] / 1000:5.1f} ms/req" + again(r, len(cold_srcs)), flush=True)
        warm_order = [n for n in ("mediaflow", "nginx", "mediaflow-b") if n in servers and warm_paths_mf]
        if rnd % 2:
            warm_order.reverse()
        for name in warm_order:
            with RssSampler(procs[name].pid) as s, CpuMeter(procs[name].pid) as cpu:
                r = wrk(base[name], os.path.join(paths_dir, f"warm-{name}"), 1, a.warm_conns, a.warm_seconds,
                        a.lua, 10)
            r["peak_rss_kb"] = s.peak
            r["cpu_us_per_req"] = cpu.seconds * 1e6 / max(r["requests"], 1)
            results["warm"].setdefault(name, []).append(r)
            print(f"warm  {name:<11} round {rnd + 1}  {r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1000:7.2f} ms  "
                  f"p99 {r['p99_us'] / 1000:7.2f} ms  errors {r['errors']}  CPU {r['cpu_us_per_req']:5.1f} µs/req",
                  flush=True)

    summarise(results, work)


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def summarise(results, work):
    s = results["settings"]
    cs = results["cold_set"]
    lines = ["", f"# {results['machine']}", f"# medians of {results['rounds']} interleaved rounds",
             f"# cold: {cs['originals']} distinct originals ({len(cs['photos'])} photos x {cs['copies']} copies), "
             f"WebP 448-575 px, c={s['cold_conns']}; rss: c={s['rss_conns']}, "
             + ", ".join(f"{lbl} {os.path.basename(v['source'])} x {v['copies']} copies"
                         for lbl, v in results["rss_sets"].items())]
    if "warm_set" in results:
        w = results["warm_set"]
        lines.append(f"# warm: {w['variants']} variants (512 px q90 WebP), median {fmt_kb(w['median_bytes'])}, "
                     f"c={s['warm_conns']}")
    lines += ["", "| test | server | req/s | p50 ms | p99 ms | errors | peak RSS MB |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    tsv = ["test\tserver\trps\tp50_ms\tp99_ms\terrors\tpeak_rss_mb"]
    total_errors = {}

    def row(*r):
        lines.append("| %s | %s | %.1f | %.1f | %.1f | %d | %.0f |" % r)
        tsv.append("%s\t%s\t%.2f\t%.2f\t%.2f\t%d\t%.1f" % r)
        if r[5]:
            total_errors[f"{r[0]} {r[1]}"] = r[5]

    for test in ("cold", "warm"):
        for name, runs in results[test].items():
            row(test, name, med(runs, "rps"), med(runs, "p50_us") / 1000, med(runs, "p99_us") / 1000,
                sum(r["errors"] for r in runs), max(r["peak_rss_kb"] for r in runs) / 1024)
    for label, per_server in results["rss"].items():
        for name, r in per_server.items():
            row(f"rss{s['rss_conns']} {label}", name, r["rps"], r["p50_us"] / 1000, r["p99_us"] / 1000, r["errors"],
                r["peak_rss_kb"] / 1024)
    if results["quality"]:
        lines.append("")
        lines.append("| server | median PSNR dB (512 px q90 WebP vs common reference) | median SSIM | median bytes |")
        lines.append("| --- | ---: | ---: | ---: |")
        for name, qs in results["quality"].items():
            ok = [q for q in qs if q["psnr"] == q["psnr"]]
            if ok:
                lines.append("| %s | %.2f | %.4f | %d |" % (name, statistics.median(q["psnr"] for q in ok),
                                                         statistics.median(q["ssim"] for q in ok),
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
                ratios[f"cold CPU per request {peer}/mediaflow"] = \
                    med(cold[peer], "cpu_us_per_req") / med(cold["mediaflow"], "cpu_us_per_req")
    if "mediaflow" in warm and "nginx" in warm:
        per_round = [m["rps"] / n["rps"] for m, n in zip(warm["mediaflow"], warm["nginx"])]
        ratios["warm req/s mediaflow/nginx"] = statistics.median(per_round)
        ratios["warm CPU per request nginx/mediaflow"] = \
            med(warm["nginx"], "cpu_us_per_req") / med(warm["mediaflow"], "cpu_us_per_req")
    for test in ("cold", "warm"):
        if "mediaflow" in results[test] and "mediaflow-b" in results[test]:
            per_round = [b["rps"] / m["rps"] for m, b in zip(results[test]["mediaflow"], results[test]["mediaflow-b"])]
            ratios[f"{test} req/s mediaflow-b/mediaflow"] = statistics.median(per_round)
    for label, per_server in results["rss"].items():
        if "mediaflow" in per_server:
            mf = per_server["mediaflow"]["peak_rss_kb"]
            ratios[f"peak RSS MB mediaflow, {s['rss_conns']} cold {label}"] = mf / 1024
            for peer in ("ipx", "thumbor", "mediaflow-b"):
                if peer in per_server and per_server[peer]["peak_rss_kb"]:
                    ratios[f"peak RSS {label} mediaflow/{peer}"] = mf / per_server[peer]["peak_rss_kb"]
    for k, v in ratios.items():
        lines.append(f"{k}: {v:.2f}")
    lines.append("errors: " + (", ".join(f"{k} {v}" for k, v in total_errors.items()) + " (those lines are meaningless)"
                               if total_errors else "0 in every phase"))
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
