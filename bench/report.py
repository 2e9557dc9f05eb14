"""Rows, targets and the printed table of the benchmark (no I/O but printing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

GIB = 1 << 30
MIB = 1 << 20
FAILOVER_LOAD_INTERVAL_MS = 10

# Start-up and footprint budgets (the 20-Service issue): each is judged against a reference
# measured in the same run, or printed beside one.
READY_SLACK_S = 0.15  # first Forwarding line: at most this much after plain kubectl's
MANY = 20
MANY_READY_S = 2.0
MANY_PSS_MB = 150.0
MANY_IDLE_CPU_PCT = 0.5
CONTEXTS = 1  # the 20 Services live in one kube context: one kubectl proxy
NATIVE_THROUGHPUT_FACTOR = 0.9
PLAIN_READY = "kubectl port-forward"
PLUGIN_MANY = "kubectl vibe pf × 20 Services"
KUBECTL_MANY = "20 × kubectl port-forward"
# Discovery and stability budgets (the many-targets issue).
PLUGIN_DISCOVERY = "kubectl vibe pf -l tier=many (20 Services)"
PLUGIN_STABLE = "kubectl vibe pf -l fleet=yes (30 forwards)"
KUBECTL_STABLE = "30 × kubectl port-forward"
STABLE_RSS_GROWTH_PCT = 10.0  # last fifth's mean RSS vs the first fifth's
SOCAT_KUBECTL = "socat → kubectl port-forward"
E2E_DIRECT = "direct to the pod's ports"


@dataclass
class Row:
    section: str
    path: str
    values: Dict[str, Any] = field(default_factory=dict)
    verified: Optional[bool] = None
    skipped: Optional[str] = None
    error: Optional[str] = None


def value(rows: List[Row], section: str, path: str, key: str) -> Optional[float]:
    for r in rows:
        if r.section == section and r.path == path and not r.skipped and not r.error:
            return r.values.get(key)
    return None


# ---- targets (issue 7) ------------------------------------------------------------------------


def target(
    name: str,
    figure: Optional[float],
    limit: Optional[float],
    at_most: bool,
    reference: Optional[Tuple[str, Optional[float]]] = None,
) -> Dict[str, Any]:
    """A budget's verdict; `reference` is the same run's figure of what the budget is about
    (printed beside it when the limit is not simply that figure)."""
    if figure is None or limit is None:
        return {"target": name, "status": "not measured"}
    met = figure <= limit if at_most else figure >= limit
    out = {"target": name, "figure": figure, "limit": limit, "status": "met" if met else "MISSED"}
    if reference is not None and reference[1] is not None:
        out["reference"], out["reference_figure"] = reference
    return out


def scaled(reference: Optional[float], factor: float) -> Optional[float]:
    return reference * factor if reference is not None else None


def plus(reference: Optional[float], slack: float) -> Optional[float]:
    return reference + slack if reference is not None else None


def fixed(figure: Optional[float], limit: float) -> Optional[float]:
    """A fixed limit, reported only when the figure was measured."""
    return limit if figure is not None else None


def throughput_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    out = []
    for direction in ("up", "down"):
        socat = value(rows, "bulk", "socat", direction + "_gbps")
        for key, factor in (("plugin", 1.0), ("plugin:sniff", 0.9)):
            got = value(rows, "bulk", key, direction + "_gbps")
            name = "%s throughput %s ≥ %.1f× socat (GB/s)" % (key, direction, factor)
            out.append(target(name, got, scaled(socat, factor), at_most=False))
    for direction in ("up", "down"):
        key = direction + "_cpu_s_per_gib"
        name = "(info) plugin CPU per GiB %s ≤ socat's (s; steady under load)" % direction
        got = value(rows, "bulk", "plugin", key)
        out.append(target(name, got, value(rows, "bulk", "socat", key), at_most=True))
    return out


def added(rows: List[Row], path: str, quantile: str) -> Optional[float]:
    """Latency a path adds over the direct socket."""
    got = value(rows, "latency", path, quantile)
    direct = value(rows, "latency", "direct", quantile)
    return got - direct if got is not None and direct is not None else None


def latency_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    out = []
    for key in ("plugin", "plugin:sniff"):
        for quantile, factor in (("p50_us", 1.0), ("p99_us", 1.5)):
            name = "%s added %s ≤ %.1f× socat's (µs)" % (key, quantile[:3], factor)
            limit = scaled(added(rows, "socat", quantile), factor)
            out.append(target(name, added(rows, key, quantile), limit, at_most=True))
    return out


def end_to_end_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    out = []
    for direction in ("up", "down"):
        plain = value(rows, "e2e", "kubectl port-forward", direction + "_mbps")
        got = value(rows, "e2e", "kubectl vibe pf", direction + "_mbps")
        name = "end to end %s ≥ 0.95× plain kubectl (MB/s)" % direction
        out.append(target(name, got, scaled(plain, 0.95), at_most=False))
    plain_req = value(rows, "e2e", "kubectl port-forward", "req_p50_us")
    got = value(rows, "e2e", "kubectl vibe pf", "req_p50_us")
    name = "end to end GET p50 ≤ plain kubectl's / 0.95 (µs)"
    out.append(target(name, got, scaled(plain_req, 1 / 0.95), at_most=True))
    return out


def fixed_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    specs: List[Tuple[str, str, str, str, float]] = [
        ("plugin peak RSS over 1,000 conns ≤ 100 MB", "concurrency", "plugin", "peak_rss_mb", 100),
        ("idle live view CPU ≤ 0.5 % of a core", "idle", "live view", "cpu_pct", 0.5),
        ("idle live view output ≤ 512 B/s", "idle", "live view", "bytes_per_s", 512),
        (
            "failover: first new connection ≤ 1 s after Ready (s)",
            "failover",
            "kubectl vibe pf",
            "first_new_after_ready_s",
            1.0,
        ),
        ("failover: refused connections = 0", "failover", "kubectl vibe pf", "refused", 0),
        (
            "--version within 50 ms of python3 -c pass (ms)",
            "startup",
            "kubectl-vibe --version",
            "over_python_ms",
            50,
        ),
    ]
    out = []
    for name, section, path, key, limit in specs:
        got = value(rows, section, path, key)
        out.append(target(name, got, fixed(got, float(limit)), at_most=True))
    return out


def e2e_added(rows: List[Row], path: str, key: str = "p50_us") -> Optional[float]:
    """Latency an end-to-end path adds over connecting to the pod's ports directly."""
    got = value(rows, "e2e", path, key)
    direct = value(rows, "e2e", E2E_DIRECT, key)
    return got - direct if got is not None and direct is not None else None


def native_tunnel_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    """The native engine (SPDY through kubectl proxy) against socat in front of plain
    `kubectl port-forward`, on the same pod."""
    out = []
    for direction in ("up", "down"):
        key = direction + "_mbps"
        socat = value(rows, "e2e", SOCAT_KUBECTL, key)
        name = "native tunnel %s ≥ %.1f× socat → kubectl port-forward (MB/s)" % (
            direction,
            NATIVE_THROUGHPUT_FACTOR,
        )
        got = value(rows, "e2e", "kubectl vibe pf", key)
        limit = scaled(socat, NATIVE_THROUGHPUT_FACTOR)
        out.append(target(name, got, limit, at_most=False, reference=(SOCAT_KUBECTL, socat)))
    name = "native tunnel added echo p50 ≤ socat → kubectl port-forward's (µs)"
    got, limit = e2e_added(rows, "kubectl vibe pf"), e2e_added(rows, SOCAT_KUBECTL)
    out.append(target(name, got, limit, at_most=True))
    return out


def ready_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    plain = value(rows, "ready", PLAIN_READY, "median_s")
    out = []
    for path in ("python3 kubectl_vibe_pf.py pf", "kubectl vibe pf (built executable)"):
        name = "first Forwarding line, %s ≤ kubectl's + %.2f s (median s)" % (path, READY_SLACK_S)
        got = value(rows, "ready", path, "median_s")
        reference = (PLAIN_READY, plain)
        out.append(target(name, got, plus(plain, READY_SLACK_S), True, reference))
    return out


def footprint_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    """One 20-Service session against 20 plain kubectl port-forwards of the same Services."""
    specs: List[Tuple[str, str, float]] = [
        ("20 forwards: processes, sh watchdog aside ≤ plugin + 1 kubectl per context",
         "not_watchdog", 1.0 + CONTEXTS),
        ("20 forwards: all ready ≤ %g s (s)" % MANY_READY_S, "ready_s", MANY_READY_S),
        ("20 forwards: total PSS ≤ %g MB" % MANY_PSS_MB, "pss_mb", MANY_PSS_MB),
        ("20 forwards: idle CPU ≤ %g %% of a core" % MANY_IDLE_CPU_PCT, "idle_cpu_pct",
         MANY_IDLE_CPU_PCT),
    ]  # fmt: skip
    out = []
    for name, key, limit in specs:
        got = value(rows, "footprint", PLUGIN_MANY, key)
        reference = (KUBECTL_MANY, value(rows, "footprint", KUBECTL_MANY, key))
        out.append(target(name, got, fixed(got, limit), True, reference))
    return out


def stability_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    """20 Services by one selector ready in 2 s; 30 forwards with flat RSS and no fd or
    thread growth over the window."""
    got = value(rows, "discovery", PLUGIN_DISCOVERY, "ready_s")
    reference = (KUBECTL_MANY, value(rows, "footprint", KUBECTL_MANY, "ready_s"))
    name = "20 Services by one selector: all ready ≤ %g s (s)" % MANY_READY_S
    out = [target(name, got, fixed(got, MANY_READY_S), True, reference)]
    growth = value(rows, "stability", PLUGIN_STABLE, "rss_growth_pct")
    reference = (KUBECTL_STABLE, value(rows, "stability", KUBECTL_STABLE, "rss_growth_pct"))
    name = "30 forwards under traffic: RSS growth ≤ %g %%" % STABLE_RSS_GROWTH_PCT
    out.append(target(name, growth, fixed(growth, STABLE_RSS_GROWTH_PCT), True, reference))
    for key in ("fds", "threads"):
        before = value(rows, "stability", PLUGIN_STABLE, key + "_before")
        after = value(rows, "stability", PLUGIN_STABLE, key + "_after")
        name = "30 forwards: open %s after the traffic ≤ before" % key
        out.append(target(name, after, before, True))
    return out


def evaluate_targets(rows: List[Row]) -> List[Dict[str, Any]]:
    return (
        throughput_targets(rows)
        + latency_targets(rows)
        + end_to_end_targets(rows)
        + native_tunnel_targets(rows)
        + fixed_targets(rows)
        + ready_targets(rows)
        + footprint_targets(rows)
        + stability_targets(rows)
    )


# ---- the printed table ------------------------------------------------------------------------


def fmt(v: Any, spec: str = "%.2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return spec % v
    return str(v)


def status(row: Row) -> str:
    if row.skipped:
        return "skipped: " + row.skipped
    if row.error:
        return "ERROR: " + row.error
    return "ok" if row.verified else "BYTES DIFFER"


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "%.2f×" % (a / b) if a is not None and b else "-"


def minus(a: Optional[float], b: Optional[float]) -> str:
    return "%.1f" % (a - b) if a is not None and b is not None else "-"


def human(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return "%g %s" % (n / size, unit)
    return "%d B" % n


def yes_no(flag: Optional[bool]) -> str:
    return "yes" if flag else "no"


def print_table(result: Dict[str, Any]) -> None:
    rows = [Row(**r) for r in result["rows"]]
    print_header(result)
    print_bulk(result, rows)
    print_latency(result, rows)
    print_concurrency(result, rows)
    print_startup(result, rows)
    print_end_to_end(result, rows)
    print_idle_and_failover(result, rows)
    print_ready(result, rows)
    print_footprint(result, rows)
    print_discovery_and_stability(result, rows)
    print_targets(result)


def print_header(result: Dict[str, Any]) -> None:
    m = result["machine"]
    print(
        "kubectl-vibe benchmark (%s), %s, %d CPUs, Python %s, load avg %s → %s, %.0f s"
        % (
            result["mode"],
            result["started"],
            m["cpus"],
            m["python"],
            "/".join("%.2f" % x for x in m["loadavg_before"]),
            "/".join("%.2f" % x for x in m["loadavg_after"]),
            result["seconds"],
        )
    )


def print_bulk(result: Dict[str, Any], rows: List[Row]) -> None:
    sizes = result["sizes"]
    print(
        "\nBulk throughput, %s each way, best of %d rounds; load avg after: %s\n  verified: %s"
        % (
            human(sizes["bulk"]),
            sizes["repeats"],
            fmt(result["load_after_section"].get("bulk")),
            result["verification"]["bulk"],
        )
    )
    line = "  %-36s %8s %8s %7s %7s %11s %11s  %s"
    header = ("path", "up GB/s", "dn GB/s", "up/soc", "dn/soc", "up cpu/GiB", "dn cpu/GiB")
    print(line % (*header, "check"))
    socat_up = value(rows, "bulk", "socat", "up_gbps")
    socat_down = value(rows, "bulk", "socat", "down_gbps")
    for r in (r for r in rows if r.section == "bulk"):
        v = r.values
        print(
            line
            % (
                r.path,
                fmt(v.get("up_gbps")),
                fmt(v.get("down_gbps")),
                ratio(v.get("up_gbps"), socat_up),
                ratio(v.get("down_gbps"), socat_down),
                fmt(v.get("up_cpu_s_per_gib")),
                fmt(v.get("down_cpu_s_per_gib")),
                status(r),
            )
        )


def print_latency(result: Dict[str, Any], rows: List[Row]) -> None:
    sizes = result["sizes"]
    print(
        "\nLatency, 64-byte ping-pong × %d, best of %d rounds (µs; added = minus direct); "
        "load avg after: %s; CPUs held out of idle states: %s"
        % (
            sizes["pings"],
            sizes["latency_rounds"],
            fmt(result["load_after_section"].get("latency")),
            yes_no(result["cpu_awake"].get("latency")),
        )
    )
    line = "  %-36s %8s %8s %9s %9s  %s"
    print(line % ("path", "p50", "p99", "added p50", "added p99", "check"))
    for r in (r for r in rows if r.section == "latency"):
        p50, p99 = added(rows, r.path, "p50_us"), added(rows, r.path, "p99_us")
        print(
            line
            % (
                r.path,
                fmt(r.values.get("p50_us"), "%.1f"),
                fmt(r.values.get("p99_us"), "%.1f"),
                fmt(p50, "%.1f"),
                fmt(p99, "%.1f"),
                status(r),
            )
        )


def print_concurrency(result: Dict[str, Any], rows: List[Row]) -> None:
    sizes = result["sizes"]
    print(
        "\nConcurrency, %d simultaneous connections × %s echoed (sha256 per connection)"
        % (sizes["conns"], human(sizes["conn_bytes"]))
    )
    line = "  %-36s %8s %10s %12s  %s"
    print(line % ("path", "seconds", "byte-exact", "peak RSS MB", "check"))
    for r in (r for r in rows if r.section == "concurrency"):
        v = r.values
        print(
            line
            % (
                r.path,
                fmt(v.get("seconds")),
                fmt(v.get("byte_exact")),
                fmt(v.get("peak_rss_mb"), "%.1f"),
                status(r),
            )
        )


def print_startup(result: Dict[str, Any], rows: List[Row]) -> None:
    print("\nStart-up, best of %d" % result["sizes"]["startup_runs"])
    for r in (r for r in rows if r.section == "startup"):
        v = r.values
        over = "+%.1f ms" % v["over_python_ms"] if "over_python_ms" in v else ""
        print(
            "  %-36s %8s ms %14s  %s  (%s)"
            % (r.path, fmt(v.get("ms"), "%.1f"), over, status(r), v.get("label", ""))
        )


def print_end_to_end(result: Dict[str, Any], rows: List[Row]) -> None:
    sizes = result["sizes"]
    print(
        "\nEnd to end through real kubectl and the simulated cluster, same pod: %s each way, "
        "best of %d rounds (up: sha256 by the pod; down: count + sampled); 64-byte echo and "
        "GET /healthz × %d in %d rounds; CPUs held out of idle states: %s"
        % (
            human(sizes["e2e_bytes"]),
            sizes["repeats"],
            sizes["e2e_pings"],
            sizes["e2e_rounds"],
            yes_no(result["cpu_awake"].get("e2e")),
        )
    )
    line = "  %-38s %8s %8s %8s %6s %6s %8s %6s %11s %8s  %s"
    header = ("path", "up MB/s", "dn MB/s", "echo p50", "+p50", "p99", "GET p50", "p99")
    print(line % (*header, "kubectl cpu", "hop cpu", "check"))
    e2e = [r for r in rows if r.section == "e2e"]
    for r in e2e:
        v = r.values
        print(
            line
            % (
                r.path,
                fmt(v.get("up_mbps"), "%.1f"),
                fmt(v.get("down_mbps"), "%.1f"),
                fmt(v.get("p50_us"), "%.0f"),
                fmt(e2e_added(rows, r.path), "%.0f"),
                fmt(v.get("p99_us"), "%.0f"),
                fmt(v.get("req_p50_us"), "%.0f"),
                fmt(v.get("req_p99_us"), "%.0f"),
                fmt(v.get("kubectl_cpu_s_per_gib")),
                fmt(v.get("hop_cpu_s_per_gib")),
                status(r),
            )
        )
    print(
        "  (latency in µs, +p50: added over the direct connection; cpu: seconds per GiB moved,"
        " kubectl: kubectl port-forward or the plugin's kubectl children; hop: the plugin, or"
        " the relay in front of kubectl)"
    )
    for r in e2e:
        if r.values.get("processes"):
            print("  processes of %s: %s" % (r.path, summarise(r.values["processes"])))


def summarise(names: List[str]) -> str:
    """Process names in first-seen order, repeats counted: "20 × kubectl port-forward"."""
    counts: Dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(name if n == 1 else "%d × %s" % (n, name) for name, n in counts.items())


def print_ready(result: Dict[str, Any], rows: List[Row]) -> None:
    ready = [r for r in rows if r.section == "ready"]
    if not ready:
        return
    ports = sorted({p for r in ready for p in r.values.get("local_ports", [])})
    print(
        "\nTime from process start to the first `Forwarding from` line, svc/web %s:80: median "
        "of %d runs, interleaved, after one warm-up each; every run answered by the web pod, "
        "nothing left running" % ("/".join(map(str, ports)) or "-", result["sizes"]["startup_runs"])
    )
    line = "  %-36s %8s %7s %7s %10s  %s"
    print(line % ("path", "median s", "min s", "max s", "vs kubectl", "check"))
    plain = value(rows, "ready", PLAIN_READY, "median_s")
    for r in ready:
        v = r.values
        over = v.get("median_s")
        print(
            line
            % (
                r.path,
                fmt(v.get("median_s"), "%.3f"),
                fmt(v.get("min_s"), "%.3f"),
                fmt(v.get("max_s"), "%.3f"),
                "%+.3f" % (over - plain) if over is not None and plain is not None else "-",
                status(r),
            )
        )
        if v.get("label"):
            print("  %36s (%s)" % ("", v["label"]))


def print_footprint(result: Dict[str, Any], rows: List[Row]) -> None:
    many = [r for r in rows if r.section == "footprint"]
    if not many:
        return
    print(
        "\n%d Services forwarded: one `kubectl vibe pf` session vs %d plain kubectl "
        "port-forwards started at once; ready: until every forward printed its line; then one "
        "request per forward (each answered by its Service's pod), idle CPU over %g s without "
        "traffic (utime+stime of every process, 10 ms ticks), PSS/RSS summed over every process"
        % (MANY, MANY, result["sizes"]["idle_seconds"])
    )
    line = "  %-30s %8s %6s %8s %7s %7s %10s  %s"
    print(
        line % ("path", "ready s", "procs", "kubectls", "PSS MB", "RSS MB", "idle CPU %", "check")
    )
    for r in many:
        v = r.values
        print(
            line
            % (
                r.path,
                fmt(v.get("ready_s"), "%.3f"),
                fmt(v.get("process_count")),
                fmt(v.get("kubectl_count")),
                fmt(v.get("pss_mb"), "%.1f"),
                fmt(v.get("rss_mb"), "%.1f"),
                fmt(v.get("idle_cpu_pct"), "%.3f"),
                status(r),
            )
        )
    for r in many:
        if r.values.get("processes"):
            print("  processes of %s: %s" % (r.path, summarise(r.values["processes"])))
        if r.values.get("memory_mb"):
            memory = ", ".join(
                "%s %.1f/%.1f" % (name, pss, rss)
                for name, (pss, rss) in r.values["memory_mb"].items()
            )
            print("  PSS/RSS MB by process of %s: %s" % (r.path, memory))
        if r.values.get("changed_while_idle"):
            print("  changed while idle: %s" % ", ".join(r.values["changed_while_idle"]))
        if r.values.get("label"):
            print("  %s ran: %s" % (r.path, r.values["label"]))


def print_discovery_and_stability(result: Dict[str, Any], rows: List[Row]) -> None:
    for r in (r for r in rows if r.section == "discovery"):
        print(
            "\nDiscovery: %s: all %s forwards ready in %s s (20 plain kubectls started at once: "
            "%s s)  %s"
            % (
                r.path,
                fmt(r.values.get("forwards")),
                fmt(r.values.get("ready_s"), "%.3f"),
                fmt(value(rows, "footprint", KUBECTL_MANY, "ready_s"), "%.3f"),
                status(r),
            )
        )
    stable = [r for r in rows if r.section == "stability"]
    if not stable:
        return
    print(
        "\nStability: both sides at once under the same mixed traffic for %s s (keep-alive "
        "series, new connections, 1 MB downloads checked); RSS/PSS summed over each side's "
        "processes, mean of the first and the last fifth of the samples"
        % fmt(stable[0].values.get("seconds"), "%.0f")
    )
    line = "  %-42s %9s %7s %15s %15s %8s %11s %9s  %s"
    print(line % ("path", "requests", "failed", "RSS MB first→last", "PSS MB first→last",
                  "RSS max", "fds b→a", "threads", "check"))  # fmt: skip
    for r in stable:
        v = r.values
        print(
            line
            % (
                r.path,
                fmt(v.get("requests_ok")),
                fmt(v.get("requests_failed")),
                "%s→%s" % (fmt(v.get("rss_first_mb"), "%.1f"), fmt(v.get("rss_last_mb"), "%.1f")),
                "%s→%s" % (fmt(v.get("pss_first_mb"), "%.1f"), fmt(v.get("pss_last_mb"), "%.1f")),
                fmt(v.get("rss_max_mb"), "%.1f"),
                "%s→%s" % (fmt(v.get("fds_before")), fmt(v.get("fds_after"))),
                "%s→%s" % (fmt(v.get("threads_before")), fmt(v.get("threads_after"))),
                status(r),
            )
        )
        if v.get("first_failure"):
            print("    first failure: %s" % v["first_failure"])


def print_idle_and_failover(result: Dict[str, Any], rows: List[Row]) -> None:
    print(
        "\nIdle live view (pty, no traffic, %g s)   [background sessions: none exist yet]"
        % result["sizes"]["idle_seconds"]
    )
    for r in (r for r in rows if r.section == "idle"):
        v = r.values
        print(
            "  %-36s CPU %s %% of a core, output %s B/s (kubectl child %s %%)  %s"
            % (
                r.path,
                fmt(v.get("cpu_pct")),
                fmt(v.get("bytes_per_s"), "%.0f"),
                fmt(v.get("kubectl_child_cpu_pct")),
                status(r),
            )
        )
    print(
        "\nFailover: pod deleted under steady load (a new connection every %d ms)"
        % FAILOVER_LOAD_INTERVAL_MS
    )
    for r in (r for r in rows if r.section == "failover"):
        v = r.values
        print(
            "  %-36s first new connection %s s after Ready; refused %s, failed %s of %s"
            " (replacement Ready %s s after delete)  %s"
            % (
                r.path,
                fmt(v.get("first_new_after_ready_s"), "%.3f"),
                fmt(v.get("refused")),
                fmt(v.get("failed")),
                fmt(v.get("requests")),
                fmt(v.get("replacement_ready_after_delete_s")),
                status(r),
            )
        )


def print_targets(result: Dict[str, Any]) -> None:
    if result["mode"] == "quick":
        print("\nTargets (quick mode: sizes too small for these figures to mean anything)")
    else:
        print("\nTargets")
    for t in result["targets"]:
        if "figure" in t:
            beside = ""
            if "reference" in t:
                beside = "   (%s: %.2f)" % (t["reference"], t["reference_figure"])
            print(
                "  %-7s %-60s %9.2f vs %9.2f%s"
                % (t["status"], t["target"], t["figure"], t["limit"], beside)
            )
        else:
            print("  %-7s %s" % (t["status"], t["target"]))


def failed_rows(result: Dict[str, Any], strict: bool) -> List[str]:
    bad = []
    for r in result["rows"]:
        row = Row(**r)
        if row.error or row.verified is False or (strict and row.skipped):
            bad.append("%s %s: %s" % (row.section, row.path, status(row)))
    return bad
