#!/usr/bin/python3
"""Sonde fault lab: one program for the four services and the load generator.

    svc.py ROLE LABDIR        ROLE is gateway, cart, product, config or loadgen

The process name (comm) is set to ROLE first thing, before any thread exists, because Sonde
names services by process name when there is no Kubernetes. Everything else (addresses, rates)
comes from LABDIR/lab.json, written by lab.py. Service-side faults are switched through
LABDIR/faults/<role>.json, checked at most once per request (one stat), never over HTTP.
"""
import ctypes
import sys

ROLES = ("gateway", "cart", "product", "config", "loadgen")
PR_SET_NAME = 15

if len(sys.argv) != 3 or sys.argv[1] not in ROLES:
    sys.stderr.write(f"usage: svc.py {{{','.join(ROLES)}}} LABDIR\n")
    sys.exit(2)
ROLE = sys.argv[1]
LABDIR = sys.argv[2]
_libc = ctypes.CDLL(None, use_errno=True)


def set_comm(name=ROLE):
    """prctl(PR_SET_NAME) on the calling thread (new threads inherit the creator's comm)."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


set_comm()

# Only now the rest: nothing above may start a thread.
import hashlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

with open(os.path.join(LABDIR, "lab.json")) as f:
    CONF = json.load(f)
PORT = CONF["service_port"]
UPSTREAM_TIMEOUT_S = CONF.get("upstream_timeout_s", 2.0)
FAULT_FILE = os.path.join(LABDIR, "faults", f"{ROLE}.json")
_log_lock = threading.Lock()


def log(msg):
    line = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z {msg}\n"
    with _log_lock:
        sys.stderr.write(line)
        sys.stderr.flush()


class Faults:
    """The role's fault switches: LABDIR/faults/<role>.json, reloaded when its mtime changes."""

    def __init__(self, path):
        self.path = path
        self.key = None
        self.value = {}
        self.lock = threading.Lock()

    def get(self):
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        with self.lock:
            if key != self.key:
                value = {}
                if key is not None:
                    try:
                        with open(self.path) as f:
                            value = json.load(f)
                    except (OSError, ValueError):
                        value = self.value
                if value != self.value:
                    log(f"INFO fault switches now {json.dumps(value, sort_keys=True)}")
                self.key, self.value = key, value
            return self.value


FAULTS = Faults(FAULT_FILE)


def _calibrate_burn():
    """Iterations of the pure-Python hash loop that take ~1.5 ms of CPU on this machine."""
    def run(n):
        t = time.thread_time()
        _fnv(n, b"calibrate")
        return time.thread_time() - t
    n = 2000
    for _ in range(5):
        dt = max(run(n), 1e-5)
        n = max(200, int(n * 0.0015 / dt))
    return n


def _fnv(n, seed):
    h = 0xcbf29ce484222325
    data = seed * 4
    ln = len(data)
    for i in range(n):
        h = ((h ^ data[i % ln]) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


BURN_N = CONF.get("burn_iterations") or _calibrate_burn()


def burn(seed):
    """~1.5 ms of pure-Python CPU work per request (a CPU quota makes this slow)."""
    return _fnv(BURN_N, seed.encode() if isinstance(seed, str) else seed)


class UpstreamError(Exception):
    pass


def call(callee, method, path, body=None, deadline_s=UPSTREAM_TIMEOUT_S):
    """One request to CALLEE.lab: a DNS lookup and a new TCP connection every time."""
    name = f"{callee}.lab"
    t0 = time.monotonic()
    end = t0 + deadline_s

    def ms():
        return int((time.monotonic() - t0) * 1000)

    try:
        infos = socket.getaddrinfo(name, PORT, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        log(f"ERROR lookup {name} failed: {e}")
        raise UpstreamError(f"lookup {name}: {e}")
    addr = infos[0][4][0]
    conn = http.client.HTTPConnection(addr, PORT, timeout=max(0.05, end - time.monotonic()))
    try:
        headers = {"Host": f"{name}:{PORT}", "User-Agent": f"lab-{ROLE}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        conn.sock.settimeout(max(0.05, end - time.monotonic()))
        resp = conn.getresponse()
        chunks = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline")
            conn.sock.settimeout(left)
            c = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not c:
                break
            chunks.append(c)
        data = b"".join(chunks)
        if resp.status >= 500:
            log(f"ERROR upstream {callee} returned {resp.status} for {method} {path} after {ms()} ms")
            raise UpstreamError(f"{callee} returned {resp.status}")
        return resp.status, data
    except socket.timeout:
        log(f"ERROR upstream {callee} timed out after {ms()} ms ({method} {path})")
        raise UpstreamError(f"{callee} timed out")
    except (OSError, http.client.HTTPException) as e:
        log(f"ERROR upstream {callee} {method} {path} failed after {ms()} ms: {e!r}")
        raise UpstreamError(f"{callee}: {e}")
    finally:
        conn.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"lab-{ROLE}/1.0"

    def log_message(self, fmt, *args):  # no access log: only errors go to stderr
        pass

    def reply(self, code, obj=None, raw=None):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        route = ROUTES.get((method, self.path.split("?")[0]))
        if self.path == "/health":
            return self.reply(200, {"role": ROLE, "ok": True})
        if route is None:
            return self.reply(404, {"error": "not found", "path": self.path})
        burn(self.path)
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug in the lab: answer 500 and say so
            log(f"ERROR handler {method} {self.path} crashed: {e!r}")
            try:
                self.reply(500, {"error": repr(e)})
            except OSError:
                pass


# --- gateway ---------------------------------------------------------------------------------

def gw_home(h):
    t0 = time.monotonic()
    try:
        _, products = call("product", "GET", "/product/list")
        _, config = call("config", "GET", "/config")
    except UpstreamError as e:
        return h.reply(502, {"error": str(e)})
    h.reply(200, {"products": len(products), "config_bytes": len(config),
                  "ms": int((time.monotonic() - t0) * 1000)})


def gw_cart(h):
    try:
        _, items = call("cart", "GET", "/cart/items")
    except UpstreamError as e:
        return h.reply(502, {"error": str(e)})
    h.reply(200, {"cart": json.loads(items)})


def gw_checkout(h):
    body = h.body()
    try:
        _, res = call("cart", "POST", "/cart/checkout", body=body)
    except UpstreamError as e:
        return h.reply(502, {"error": str(e)})
    h.reply(200, json.loads(res))


# --- cart ------------------------------------------------------------------------------------

_carts = {}
_carts_lock = threading.Lock()


def cart_fault_delay():
    d = FAULTS.get().get("delay_ms", 0)
    if d:
        time.sleep(d / 1000.0)


def cart_items(h):
    cart_fault_delay()
    user = random.randint(1, 500)
    with _carts_lock:
        items = _carts.setdefault(user, [{"sku": f"sku-{random.randint(1, 5000)}", "qty": random.randint(1, 3)}
                                         for _ in range(random.randint(1, 5))])
        items = list(items)
    h.reply(200, {"user": user, "items": items})


def cart_checkout(h):
    f = FAULTS.get()
    cart_fault_delay()
    try:
        req = json.loads(h.body() or b"{}")
    except ValueError:
        req = {}
    order = random.randint(10000, 99999)
    if random.random() < f.get("error_rate", 0.0):
        sku = random.randint(1, 5000)
        log(f"ERROR checkout of order {order} for user {req.get('user', 0)} failed: "
            f"ValueError: price for sku-{sku} is not a number ('N/A')")
        return h.reply(500, {"error": "internal error", "order": order})
    total = sum(i.get("qty", 1) * (100 + (hash(i.get("sku", "")) % 900)) for i in req.get("items", []))
    h.reply(200, {"order": order, "total_cents": total, "status": "confirmed"})


# --- product ---------------------------------------------------------------------------------

_pymysql = None
QUERY = ("SELECT id, sku, name, price FROM shop.products WHERE category = %s "
         "ORDER BY price DESC LIMIT 20")
# The same query, but MariaDB spends SLEEP(s) in it, once per query: the one-row derived
# table is evaluated once (SLEEP in the select list or a scalar subquery runs once per row).
SLOW_QUERY = ("SELECT p.id, p.sku, p.name, p.price, w.waited FROM (SELECT SLEEP({s}) AS waited) AS w, "
              "shop.products AS p WHERE p.category = %s ORDER BY p.price DESC LIMIT 20")


def product_list(h):
    global _pymysql
    if _pymysql is None:
        import pymysql
        _pymysql = pymysql
    sleep_s = FAULTS.get().get("sql_sleep_s", 0)
    sql = SLOW_QUERY.format(s=float(sleep_s)) if sleep_s else QUERY
    cat = random.randint(1, CONF["db"]["categories"])
    t0 = time.monotonic()
    try:
        conn = _pymysql.connect(host=CONF["db"]["host"], port=CONF["db"]["port"], user="root",
                                database="shop", connect_timeout=2, read_timeout=5, write_timeout=5)
    except Exception as e:
        log(f"ERROR connect to {CONF['db']['host']}:{CONF['db']['port']} failed after "
            f"{int((time.monotonic() - t0) * 1000)} ms: {e}")
        return h.reply(500, {"error": "database unavailable"})
    try:
        with conn.cursor() as cur:
            cur.execute(sql, (cat,))
            rows = cur.fetchall()
    except Exception as e:
        log(f"ERROR query failed after {int((time.monotonic() - t0) * 1000)} ms "
            f"(category {cat}): {e}")
        return h.reply(500, {"error": "query failed"})
    finally:
        try:
            conn.close()
        except Exception:
            pass
    h.reply(200, {"category": cat, "products": [
        {"id": r[0], "sku": r[1], "name": r[2], "price": float(r[3])} for r in rows]})


# --- config ----------------------------------------------------------------------------------

def _config_body():
    rnd = random.Random(7)
    flags = {}
    i = 0
    while True:
        flags[f"feature.{i:04d}.{rnd.choice(['ui', 'cart', 'search', 'pricing'])}"] = {
            "enabled": rnd.random() < 0.5, "rollout": rnd.randint(0, 100),
            "owner": hashlib.sha1(str(i).encode()).hexdigest()[:12]}
        i += 1
        body = json.dumps({"version": 42, "flags": flags}).encode()
        if len(body) >= CONF.get("config_bytes", 32768):
            return body


CONFIG_BODY = _config_body() if ROLE == "config" else b""


def config_get(h):
    h.reply(200, raw=CONFIG_BODY)


ROUTES = {
    "gateway": {("GET", "/api/home"): gw_home, ("GET", "/api/cart"): gw_cart,
                ("POST", "/api/checkout"): gw_checkout},
    "cart": {("GET", "/cart/items"): cart_items, ("POST", "/cart/checkout"): cart_checkout},
    "product": {("GET", "/product/list"): product_list},
    "config": {("GET", "/config"): config_get},
}.get(ROLE, {})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def process_request_thread(self, request, client_address):
        set_comm()  # no-op on 3.11; newer Pythons name OS threads after Thread.name
        super().process_request_thread(request, client_address)


def serve():
    addr = CONF["hosts"][ROLE]["ip"]
    srv = Server((addr, PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    log(f"INFO {ROLE} listening on {addr}:{PORT} (burn {BURN_N} iterations per request)")
    srv.serve_forever()


# --- load generator --------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.n = 0
        self.err = 0
        self.lat = []
        self.ep = {}
        self.codes = {}
        self.shed = 0

    def add(self, ep, ok, ms, code):
        with self.lock:
            self.n += 1
            self.err += 0 if ok else 1
            self.lat.append(ms)
            e = self.ep.setdefault(ep, [0, 0, 0.0])
            e[0] += 1
            e[1] += 0 if ok else 1
            e[2] += ms
            self.codes[str(code)] = self.codes.get(str(code), 0) + 1

    def take(self):
        with self.lock:
            out = (self.n, self.err, self.lat, self.ep, self.codes, self.shed)
            self.reset()
            return out


def loadgen():
    rate = float(CONF["load"]["rate"])
    mix = CONF["load"]["mix"]  # [[endpoint, weight], ...]
    max_inflight = int(CONF["load"].get("max_inflight", 200))
    client_timeout = float(CONF["load"].get("timeout_s", 10))
    out_path = os.path.join(LABDIR, "loadgen.jsonl")
    stats = Stats()
    inflight = threading.BoundedSemaphore(max_inflight)
    endpoints = [m[0] for m in mix]
    weights = [m[1] for m in mix]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def one(ep):
        set_comm()
        t0 = time.monotonic()
        ok, code = False, 0
        try:
            method, path = ep.split(" ", 1)
            body = None
            if method == "POST":
                body = json.dumps({"user": random.randint(1, 500), "items": [
                    {"sku": f"sku-{random.randint(1, 5000)}", "qty": random.randint(1, 3)}
                    for _ in range(random.randint(1, 4))]})
            addr = socket.getaddrinfo("gateway.lab", PORT, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
            conn = http.client.HTTPConnection(addr, PORT, timeout=client_timeout)
            try:
                conn.request(method, path, body=body, headers={
                    "Host": f"gateway.lab:{PORT}", "User-Agent": "lab-loadgen",
                    **({"Content-Type": "application/json"} if body else {})})
                r = conn.getresponse()
                r.read()
                code = r.status
                ok = 200 <= code < 400
            finally:
                conn.close()
        except Exception as e:
            code = type(e).__name__
        finally:
            inflight.release()
        stats.add(ep, ok, (time.monotonic() - t0) * 1000.0, code)

    def reporter():
        set_comm()
        nxt = int(time.time()) + 1
        with open(out_path, "a", buffering=1) as f:
            while not stop.is_set():
                time.sleep(max(0, nxt - time.time()))
                n, err, lat, ep, codes, shed = stats.take()
                lat.sort()
                rec = {"t": nxt, "n": n, "err": err,
                       "mean_ms": round(sum(lat) / n, 1) if n else None,
                       "p95_ms": round(lat[min(n - 1, int(n * 0.95))], 1) if n else None,
                       "max_ms": round(lat[-1], 1) if n else None,
                       "ep": {k: {"n": v[0], "err": v[1], "mean_ms": round(v[2] / v[0], 1)} for k, v in ep.items()},
                       "codes": codes, "shed": shed}
                f.write(json.dumps(rec) + "\n")
                nxt += 1

    threading.Thread(target=reporter, name=ROLE, daemon=True).start()
    log(f"INFO loadgen: {rate} requests/s, mix {mix}")
    period = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        nxt += period
        ep = random.choices(endpoints, weights)[0]
        if inflight.acquire(blocking=False):
            threading.Thread(target=one, args=(ep,), name=ROLE, daemon=True).start()
        else:
            with stats.lock:
                stats.shed += 1
        d = nxt - time.monotonic()
        if d > 0:
            stop.wait(d)
        elif d < -1:
            nxt = time.monotonic()
    time.sleep(0.1)


if __name__ == "__main__":
    if ROLE == "loadgen":
        loadgen()
    else:
        serve()
