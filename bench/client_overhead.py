"""What our Integration API client costs on top of plain ``requests``: per call, import time, RSS.

Per call: ``IntegrationClient.update_customer_session_v2`` against a local keep-alive HTTP/1.1
server (its own process, 127.0.0.1, TCP_NODELAY, one write per answer) that answers every request
with a canned IntegrationStateV2 (a 5-line cart and 6 effects). In the same run, with the same
body and answer, it times a bare ``requests.Session().put(url, json=body, ...).json()`` (default
``trust_env``), the same with ``trust_env = False``, and, when ``talon_one`` (the official
``talon-one-sdk``) is importable, the SDK's own ``update_customer_session_v2``. The contenders
are interleaved call by call (A B C D, B C D A, ...), so bursts of load from other processes hit
them alike; each call's wall time and this process's CPU time are recorded.

Import: ``import django_talonone.client`` vs ``import requests`` (and ``import talon_one``), each in
a fresh interpreter, wall time around the import and VmRSS before/after, median of several runs.

Figures are printed and written to ``bench/results/client_overhead.json`` with the goals of issue 3
(import <= 0.3 s and <= 40 MB RSS, per call <= 1.1x a bare ``requests.Session``) marked met or not.
Nothing is asserted: timings depend on the machine.

    .venv/bin/python bench/client_overhead.py [--n 2000] [--warmup 200] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
from _server import CannedServer
from _services import machine_info

import django_talonone
from django_talonone.client import IntegrationClient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "client_overhead.json"

SESSION_ID = "bench-session-0001"
API_KEY = "bench-0000-not-a-real-key-0000"
TIMEOUT = (3.05, 10.0)

GOAL_IMPORT_S = 0.3
GOAL_IMPORT_RSS_MB = 40.0
GOAL_CALL_RATIO = 1.1

#: (name, sku, quantity, unit price, category, attributes)
CART: list[tuple[str, str, int, float, str, dict[str, Any]]] = [
    ("Trail running shoe", "SKU-SHOE-TR-42", 1, 129.95, "shoes", {"size": "42", "color": "blue"}),
    ("Merino socks, 3-pack", "SKU-SOCK-MER-M", 2, 24.50, "accessories", {"size": "M"}),
    ("Rain jacket", "SKU-JKT-RAIN-L", 1, 189.00, "outerwear", {"size": "L", "color": "black"}),
    ("Water bottle 750 ml", "SKU-BTL-750", 3, 14.90, "accessories", {"color": "green"}),
    ("Energy gel, citrus", "SKU-GEL-CIT", 6, 2.75, "nutrition", {"flavour": "citrus"}),
]
SHIPPING = 4.95


def request_body() -> dict[str, Any]:
    """A realistic UpdateCustomerSessionV2 body: 5 cart items, coupon codes, attributes."""
    return {
        "customerSession": {
            "profileId": "customer-8812",
            "storeIntegrationId": "store-berlin-01",
            "couponCodes": ["WELCOME10", "FREESHIP"],
            "referralCode": "FRIEND-4F2K",
            "state": "open",
            "cartItems": [
                {
                    "name": name,
                    "sku": sku,
                    "quantity": qty,
                    "price": price,
                    "category": category,
                    "attributes": attrs,
                }
                for name, sku, qty, price, category, attrs in CART
            ],
            "additionalCosts": {"shipping": {"price": SHIPPING}},
            "identifiers": ["device-7f3a9c21"],
            "attributes": {"channel": "web", "paymentMethod": "card", "shippingCountry": "DE"},
        },
        "responseContent": ["customerSession"],
    }


def _effect(
    campaign: int, rule: str, kind: str, props: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "campaignId": campaign,
        "rulesetId": campaign * 10 + 1,
        "ruleIndex": 0,
        "ruleName": rule,
        "effectType": kind,
        "conditionIndex": 0,
        "evaluationGroupID": 1,
        "evaluationGroupMode": "stackable",
        "campaignRevisionId": campaign * 100,
        "campaignRevisionVersionId": campaign * 100 + 3,
        "props": props,
        **extra,
    }


def canned_state() -> dict[str, Any]:
    """The IntegrationStateV2 the server answers: the session with its 5-line cart, 6 effects."""
    items = [
        {
            "name": name,
            "sku": sku,
            "quantity": qty,
            "returnedQuantity": 0,
            "remainingQuantity": qty,
            "price": price,
            "category": category,
            "position": float(i),
            "attributes": attrs,
        }
        for i, (name, sku, qty, price, category, attrs) in enumerate(CART)
    ]
    cart_total = round(sum(qty * price for _, _, qty, price, _, _ in CART), 2)
    session = {
        "id": 4711,
        "created": "2026-11-23T10:00:00Z",
        "integrationId": SESSION_ID,
        "applicationId": 12,
        "profileId": "customer-8812",
        "storeIntegrationId": "store-berlin-01",
        "evaluableCampaignIds": [],
        "couponCodes": ["WELCOME10", "FREESHIP"],
        "referralCode": "FRIEND-4F2K",
        "loyaltyCards": [],
        "state": "open",
        "cartItems": items,
        "additionalCosts": {"shipping": {"price": SHIPPING}},
        "identifiers": ["device-7f3a9c21"],
        "attributes": {"channel": "web", "paymentMethod": "card", "shippingCountry": "DE"},
        "firstSession": False,
        "updateCount": 3,
        "total": round(cart_total + SHIPPING, 2),
        "cartItemTotal": cart_total,
        "additionalCostTotal": SHIPPING,
        "updated": "2026-11-23T10:00:03Z",
    }
    effects = [
        _effect(
            101,
            "10% off with WELCOME10",
            "setDiscount",
            {"name": "10% off with WELCOME10", "value": 38.14, "scope": "sessionTotal"},
            triggeredByCoupon=90001,
        ),
        _effect(
            102,
            "Socks: second pack half price",
            "setDiscountPerItem",
            {
                "name": "Socks: second pack half price",
                "value": 12.25,
                "position": 1,
                "subPosition": 1,
                "scope": "price",
            },
        ),
        _effect(
            102,
            "Gels: 6 for 5",
            "setDiscountPerItem",
            {"name": "Gels: 6 for 5", "value": 2.75, "position": 4, "subPosition": 5},
        ),
        _effect(101, "10% off with WELCOME10", "acceptCoupon", {"value": "WELCOME10"}),
        _effect(
            103,
            "1 point per euro",
            "addLoyaltyPoints",
            {
                "name": "1 point per euro",
                "programId": 7,
                "subLedgerId": "",
                "value": 381,
                "recipientIntegrationId": "customer-8812",
                "startDate": "2026-11-23T10:00:03Z",
                "expiryDate": "2027-11-23T10:00:03Z",
                "transactionUUID": "5b0e7a52-6d8f-4c61-9a4e-2f7c1d3e8a90",
            },
        ),
        _effect(
            104,
            "Free shipping hint",
            "showNotification",
            {
                "notificationType": "info",
                "title": "Free shipping",
                "body": "Orders over 400 EUR ship for free.",
            },
        ),
    ]
    return {
        "customerSession": session,
        "effects": effects,
        "createdCoupons": [],
        "createdReferrals": [],
    }


# --- contenders --------------------------------------------------------------------------------


@dataclass
class Contender:
    key: str
    label: str
    call: Callable[[], Any]
    close: Callable[[], None]
    samples: list[int] = field(default_factory=list)  # wall ns of each call
    cpu: list[int] = field(default_factory=list)  # this process's CPU ns during each call


def _ok(result: Any) -> bool:
    """The canned answer came back decoded: 6 effects (dict from us/requests, model from SDK)."""
    if isinstance(result, dict):
        effects = result.get("effects")
    else:
        effects = getattr(result, "effects", None)
    return effects is not None and len(effects) == 6


def build_contenders(
    base_url: str, body: dict[str, Any], want_sdk: bool, skipped: list[str]
) -> list[Contender]:
    url = f"{base_url}/v2/customer_sessions/{SESSION_ID}"
    headers = {"Authorization": f"ApiKey-v1 {API_KEY}", "Accept": "application/json"}

    ours = IntegrationClient(base_url, API_KEY, timeout=TIMEOUT)
    bare = requests.Session()
    bare_no_env = requests.Session()
    bare_no_env.trust_env = False

    def call_ours() -> Any:
        return ours.update_customer_session_v2(SESSION_ID, body)

    def call_bare() -> Any:
        return bare.put(url, json=body, headers=headers, timeout=TIMEOUT).json()

    def call_bare_no_env() -> Any:
        return bare_no_env.put(url, json=body, headers=headers, timeout=TIMEOUT).json()

    contenders = [
        Contender("ours", "django_talonone IntegrationClient", call_ours, ours.close),
        Contender("requests", "requests.Session (trust_env)", call_bare, bare.close),
        Contender(
            "requests_no_env",
            "requests.Session (trust_env=False)",
            call_bare_no_env,
            bare_no_env.close,
        ),
    ]
    if want_sdk:
        try:
            contenders.append(_sdk_contender(base_url, body))
        except Exception as exc:  # the SDK is optional: report, never fail the bench on it
            skipped.append(f"talon_one: failed to run ({type(exc).__name__}: {exc})"[:300])
    return contenders


def _sdk_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("talon-one-sdk")
    except PackageNotFoundError:
        return None


def _sdk_contender(base_url: str, body: dict[str, Any]) -> Contender:
    import talon_one

    configuration = talon_one.Configuration(
        host=base_url,
        api_key={"api_key_v1": API_KEY},
        api_key_prefix={"api_key_v1": "ApiKey-v1"},
    )
    api_client = talon_one.ApiClient(configuration)
    api = talon_one.IntegrationApi(api_client)
    # The SDK takes a pydantic model; it is built once here, outside the timed loop (generous to
    # the SDK: a shop would build it from its cart on every call).
    model = talon_one.IntegrationRequest.from_dict(body)

    def call_sdk() -> Any:
        return api.update_customer_session_v2(SESSION_ID, model, _request_timeout=TIMEOUT)

    def close() -> None:
        api_client.rest_client.pool_manager.clear()

    if not _ok(call_sdk()):
        raise ValueError("unexpected answer from the SDK call")
    return Contender("talon_one", f"talon_one SDK {_sdk_version() or '?'}", call_sdk, close)


# --- timing ------------------------------------------------------------------------------------


def run_interleaved(contenders: list[Contender], n: int, warmup: int) -> None:
    """`warmup` untimed then `n` timed calls per contender, interleaved call by call.

    The order rotates every cycle (A B C D, B C D A, ...) so no contender always follows the
    same one; drift and bursts of load on the machine fall on all of them alike.
    """
    for c in contenders:
        if not _ok(answer := c.call()):
            raise SystemExit(f"{c.label}: unexpected answer {str(answer)[:200]}")
    m = len(contenders)
    orders = [contenders[k:] + contenders[:k] for k in range(m)]
    for i in range(warmup):
        for c in orders[i % m]:
            c.call()
    gc.collect()
    wall = time.perf_counter_ns
    cpu = time.process_time_ns
    for i in range(n):
        for c in orders[i % m]:
            call = c.call
            cpu0 = cpu()
            t0 = wall()
            call()
            t1 = wall()
            cpu1 = cpu()
            c.samples.append(t1 - t0)
            c.cpu.append(cpu1 - cpu0)


def _pct(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in µs."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000


def _chunks(values: list[int], k: int) -> list[list[int]]:
    size = math.ceil(len(values) / k)
    return [values[i : i + size] for i in range(0, len(values), size)]


def summarise(c: Contender, chunks: int) -> dict[str, Any]:
    s = sorted(c.samples)
    return {
        "label": c.label,
        "calls": len(s),
        "p50_us": round(statistics.median(s) / 1000, 1),
        "p95_us": round(_pct(s, 0.95), 1),
        "p99_us": round(_pct(s, 0.99), 1),
        "mean_us": round(statistics.fmean(s) / 1000, 1),
        "min_us": round(s[0] / 1000, 1),
        "calls_per_s": round(1e9 / statistics.fmean(s)),
        "cpu_p50_us": round(statistics.median(c.cpu) / 1000, 1),
        "cpu_mean_us": round(statistics.fmean(c.cpu) / 1000, 1),
        # The run cut into `chunks` consecutive stretches: shows drift over the run.
        "chunk_p50_us": [round(statistics.median(x) / 1000, 1) for x in _chunks(c.samples, chunks)],
    }


def ratio(a: Contender, b: Contender, chunks: int) -> dict[str, Any]:
    """a / b: wall p50 over all calls, the median of per-stretch ratios, and client CPU."""
    per_chunk = [
        statistics.median(x) / statistics.median(y)
        for x, y in zip(_chunks(a.samples, chunks), _chunks(b.samples, chunks), strict=True)
    ]
    return {
        "p50": round(statistics.median(a.samples) / statistics.median(b.samples), 3),
        "median_of_chunk_ratios": round(statistics.median(per_chunk), 3),
        "cpu_p50": round(statistics.median(a.cpu) / statistics.median(b.cpu), 3),
        "chunk_ratios": [round(v, 3) for v in per_chunk],
    }


def profile_ours(contenders: list[Contender], n: int) -> str:
    ours = next(c for c in contenders if c.key == "ours")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        ours.call()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    return out.getvalue()


_RATIO_PAIRS = (
    ("ours_vs_requests", "ours", "requests", "ours / bare requests.Session"),
    (
        "ours_vs_requests_no_env",
        "ours",
        "requests_no_env",
        "ours / requests.Session(trust_env=False)",
    ),
    ("requests_no_env_vs_requests", "requests_no_env", "requests", None),
    ("talon_one_vs_requests", "talon_one", "requests", None),
    ("ours_vs_talon_one", "ours", "talon_one", "ours / talon_one SDK"),
)


def report_per_call(
    contenders: list[Contender], chunks: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Print the per-call table and ratios; return both for the JSON report."""
    by_key = {c.key: c for c in contenders}
    per_call = {c.key: summarise(c, chunks) for c in contenders}
    ratios = {
        name: ratio(by_key[a], by_key[b], chunks)
        for name, a, b, _ in _RATIO_PAIRS
        if a in by_key and b in by_key
    }
    bare = by_key["requests"]
    print()
    print(
        f"{'contender':<36} {'p50 µs':>8} {'p95 µs':>8} {'mean µs':>8} {'calls/s':>8}"
        f" {'x bare':>6} {'CPU µs':>7} {'x bare':>6}"
    )
    for c in contenders:
        s = per_call[c.key]
        x = statistics.median(c.samples) / statistics.median(bare.samples)
        x_cpu = statistics.median(c.cpu) / statistics.median(bare.cpu)
        print(
            f"{c.label:<36} {s['p50_us']:>8.1f} {s['p95_us']:>8.1f} {s['mean_us']:>8.1f}"
            f" {s['calls_per_s']:>8} {x:>6.2f} {s['cpu_p50_us']:>7.1f} {x_cpu:>6.2f}"
        )
    print("  (wall time per call; CPU µs = this process's CPU per call, the client's own work)")
    print(f"  p50 µs over the run, in {chunks} consecutive stretches:")
    for c in contenders:
        print(f"    {c.key:<16}" + "".join(f"{v:7.0f}" for v in per_call[c.key]["chunk_p50_us"]))
    for name, _, _, label in _RATIO_PAIRS:
        if label and name in ratios:
            r = ratios[name]
            print(
                f"  {label}: {r['p50']:.3f} wall p50, {r['cpu_p50']:.3f} CPU p50,"
                f" {r['median_of_chunk_ratios']:.3f} median of per-stretch ratios"
            )
    return per_call, ratios


# --- import cost -------------------------------------------------------------------------------

# Runs in a fresh interpreter. Nothing but builtins and `time` is loaded before the import, so
# the figures are the module's own cost; json/resource are imported only after measuring.
_IMPORT_PROBE = """\
import sys, time
def rss_kb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return -1
    return -1
mod = sys.argv[1]
n_before = len(sys.modules)
before = rss_kb()
t0 = time.perf_counter()
if mod != "-":
    __import__(mod)
dt = time.perf_counter() - t0
after = rss_kb()
n_after = len(sys.modules)
import json, resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.platform == "darwin":
    peak //= 1024
if after < 0:
    after = peak
print(json.dumps({"seconds": dt, "rss_before_kb": before, "rss_after_kb": after,
                  "maxrss_kb": peak, "modules": n_after - n_before}))
"""


def measure_import(module: str, runs: int) -> dict[str, Any]:
    """Median over `runs` fresh interpreters (after one unmeasured run that warms .pyc files)."""
    results = []
    for i in range(runs + 1):
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE, module],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
        if i:
            results.append(json.loads(proc.stdout))
    secs = [r["seconds"] for r in results]
    after = [r["rss_after_kb"] for r in results]
    delta = [r["rss_after_kb"] - r["rss_before_kb"] for r in results]
    return {
        "runs": runs,
        "seconds": round(statistics.median(secs), 4),
        "seconds_all": [round(s, 4) for s in secs],
        "rss_after_mb": round(statistics.median(after) / 1024, 1),
        "rss_delta_mb": round(statistics.median(delta) / 1024, 1),
        "maxrss_mb": round(statistics.median(r["maxrss_kb"] for r in results) / 1024, 1),
        "modules_loaded": results[-1]["modules"],
    }


# --- report ------------------------------------------------------------------------------------


def _goal(value: float | None, limit: float, unit: str) -> dict[str, Any]:
    return {
        "limit": limit,
        "value": value,
        "unit": unit,
        "met": None if value is None else value <= limit,
    }


def _mark(goal: dict[str, Any]) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]


def _pinning(disabled: bool) -> tuple[int, int] | None:
    """(client CPU, server CPU) when there are two CPUs to spare and pinning is possible."""
    if disabled or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[-1]) if len(cpus) >= 2 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="timed calls per contender")
    parser.add_argument(
        "--chunks", type=int, default=10, help="stretches the run is cut into to show drift"
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per contender")
    parser.add_argument("--import-runs", type=int, default=5, help="fresh interpreters per import")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin client and server to different CPUs (default: pin when >= 2 CPUs)",
    )
    parser.add_argument("--no-sdk", action="store_true", help="leave talon_one out even if there")
    parser.add_argument("--profile", action="store_true", help="cProfile our client afterwards")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    args = parser.parse_args(argv)
    if not (args.n >= args.chunks >= 1 and args.warmup >= 0 and args.import_runs >= 1):
        parser.error("need --n >= --chunks >= 1, --warmup >= 0, --import-runs >= 1")

    # Only 127.0.0.1 is ever contacted; keep any proxy from the environment away from it while
    # still letting requests do its per-call environment lookups (that cost is part of the bench).
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
        p for p in (no_proxy, "127.0.0.1", "localhost") if p
    )

    body = request_body()
    state = canned_state()
    answer = json.dumps(state, separators=(",", ":")).encode()
    request_bytes = len(json.dumps(body, separators=(",", ":")).encode())
    skipped: list[str] = []
    sdk_installed = _sdk_version() is not None
    if args.no_sdk:
        skipped.append("talon_one: left out (--no-sdk)")
    elif not sdk_installed:
        skipped.append("talon_one: not installed (pip install talon-one-sdk to compare)")

    machine = machine_info(
        requests=requests.__version__,
        urllib3=urllib3.__version__,
        django_talonone=django_talonone.__version__,
        talon_one_sdk=_sdk_version(),
    )
    print(
        f"client_overhead: Python {machine['python']}, requests {machine['requests']}, "
        f"{machine['cpu_count']} CPU ({machine['cpu_model']}), load {machine['loadavg_1m']}"
    )
    pin = _pinning(args.no_pin)
    old_affinity = os.sched_getaffinity(0) if pin else None
    if pin:
        try:
            os.sched_setaffinity(0, {pin[0]})
            print(f"pinned: client on CPU {pin[0]}, server on CPU {pin[1]}")
        except OSError:
            pin = old_affinity = None
    with CannedServer(answer, cpu=pin[1] if pin else None) as server:
        contenders = build_contenders(server.url, body, not args.no_sdk and sdk_installed, skipped)
        print(
            f"per call: {args.n} x UpdateCustomerSessionV2 per contender, interleaved call by call"
            f" after {args.warmup} warm-up calls each; request {request_bytes} B,"
            f" answer {len(answer)} B, server {server.url} (own process, keep-alive, TCP_NODELAY)"
        )
        try:
            run_interleaved(contenders, args.n, args.warmup)
            profile = profile_ours(contenders, min(args.n, 1000)) if args.profile else None
        finally:
            for c in contenders:
                c.close()
            if old_affinity is not None:
                os.sched_setaffinity(0, old_affinity)

    per_call, ratios = report_per_call(contenders, args.chunks)

    modules = ["-", "requests", "django_talonone.client"]
    if sdk_installed and not args.no_sdk:
        modules.append("talon_one")
    print(f"\nimport, fresh interpreter each, median of {args.import_runs}:")
    print(f"{'module':<24} {'time ms':>8} {'RSS MB':>7} {'ΔRSS MB':>8} {'modules':>8}")
    imports: dict[str, Any] = {}
    for mod in modules:
        name = "(bare interpreter)" if mod == "-" else mod
        res = measure_import(mod, args.import_runs)
        imports["python" if mod == "-" else mod] = res
        if "error" in res:
            print(f"{name:<24} failed: {res['error']}")
            continue
        print(
            f"{name:<24} {res['seconds'] * 1000:>8.1f} {res['rss_after_mb']:>7.1f}"
            f" {res['rss_delta_mb']:>8.1f} {res['modules_loaded']:>8}"
        )

    ours_import = imports.get("django_talonone.client", {})
    goals = {
        "import_time_s": _goal(ours_import.get("seconds"), GOAL_IMPORT_S, "s"),
        "import_rss_mb": _goal(ours_import.get("rss_after_mb"), GOAL_IMPORT_RSS_MB, "MB"),
        # Wall p50 over all calls: the calls are interleaved, so drift is shared.
        "per_call_ratio_vs_requests": _goal(
            ratios["ours_vs_requests"]["p50"], GOAL_CALL_RATIO, "x"
        ),
    }
    print("\ngoals (issue 3):")
    print(
        f"  import django_talonone.client <= {GOAL_IMPORT_S} s: "
        f"{goals['import_time_s']['value']} s -> {_mark(goals['import_time_s'])}"
    )
    print(
        f"  RSS after import <= {GOAL_IMPORT_RSS_MB:.0f} MB: "
        f"{goals['import_rss_mb']['value']} MB -> {_mark(goals['import_rss_mb'])}"
    )
    print(
        f"  per call <= {GOAL_CALL_RATIO}x bare requests.Session (wall p50): "
        f"{goals['per_call_ratio_vs_requests']['value']}x "
        f"-> {_mark(goals['per_call_ratio_vs_requests'])}"
    )
    for note in skipped:
        print(f"  skipped: {note}")

    report = {
        "bench": "client_overhead",
        "machine": machine,
        "config": {
            "operation": "UpdateCustomerSessionV2",
            "n": args.n,
            "interleaved": "call by call, order rotating every cycle",
            "chunks": args.chunks,
            "warmup": args.warmup,
            "import_runs": args.import_runs,
            "pinned_cpus": {"client": pin[0], "server": pin[1]} if pin else None,
            "request_bytes": request_bytes,
            "answer_bytes": len(answer),
            "answer": "IntegrationStateV2: customerSession with 5 cart items, 6 effects",
            "server": "own process, 127.0.0.1, HTTP/1.1 keep-alive, TCP_NODELAY, one write",
            "bare_call": "session.put(url, json=body, headers=..., timeout=(3.05, 10)).json()",
            "sdk_call": "IntegrationApi.update_customer_session_v2(id, model) (model prebuilt)",
        },
        "per_call": per_call,
        "ratios": ratios,
        "imports": imports,
        "goals": goals,
        "skipped": skipped,
    }
    if profile is not None:
        report["profile_top"] = profile
        print("\ncProfile of our client (tottime, then cumulative):")
        print(profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
