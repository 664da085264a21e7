"""Turn bench/run's results into the table and plot of docs/performance.md.

    python bench/report.py target/bench/results.jsonl docs

Writes docs/performance.png and replaces what is between the `<!-- bench:begin -->` and
`<!-- bench:end -->` markers of docs/performance.md (the rest of the page is written by hand).
"""
import json
import platform
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OPS = [("audit", "audit, fresh fleet"), ("audit-again", "audit again, fresh fleet"),
       ("harden-fresh", "harden, fresh fleet"), ("harden-again", "harden again (no change)"),
       ("audit-hardened", "audit, hardened fleet")]
# The plot keeps the three operations both tools run.
PLOT_OPS = [o for o in OPS if o[0] in ("audit", "harden-fresh", "harden-again")]
TOOLS = ["fsfleet", "ansible"]
# The floor's runs each fsfleet audit is compared with: a fresh fleet for audit and audit
# again, a hardened one for audit-hardened.
FLOOR_OF = {"audit": "audit", "audit-again": "audit", "audit-hardened": "audit-hardened"}


def load(path):
    runs = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        if line.strip():
            # Older result lines wrote CPU seconds like `.53` (bc); JSON wants `0.53`.
            r = json.loads(re.sub(r":\.(\d)", r":0.\1", line))
            runs[(r["tool"], r["op"], r["hosts"])].append(r)
    return runs


def stat(rs, key):
    vals = [float(r[key]) for r in rs if r["ok"] and key in r]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals), len(vals)


def fmt_wall(s):
    if s is None:
        return "failed"
    med, lo, hi, n = s
    spread = f" ({lo:.1f}-{hi:.1f})" if n > 1 else ""
    return f"{med:.1f}{spread} n={n}"


def cpu2(s):
    return f"{s[0]:.2f}" if s else "-"


def ratio(a, b):
    return f"{a[0] / b[0]:.2f}x" if a and b and b[0] > 0 else "-"


def floor_table(runs, sizes):
    """Each fsfleet audit against the floor (bench/floor) on the same fleet state."""
    if not any(k[0] == "floor" for k in runs):
        return []
    out = ["", "Audit against the floor (one plain `ssh` per host in parallel reading the same files, "
           "bench/floor); ratio = fsfleet wall / floor wall:", "",
           "| hosts | operation | floor wall s | fsfleet wall s | fsfleet / floor | before wall s | before / floor "
           "| hosts' CPU s, floor | hosts' CPU s, fsfleet | hosts' CPU s, before |",
           "|---:|---|---|---|---:|---|---:|---:|---:|---:|"]
    for n in sizes:
        for op, label in OPS:
            if op not in FLOOR_OF:
                continue
            fl = runs.get(("floor", FLOOR_OF[op], n), [])
            f, b = runs.get(("fsfleet", op, n), []), runs.get(("fsfleet-before", op, n), [])
            if not fl or not (f or b):
                continue
            flw, fw, bw = stat(fl, "wall_s"), stat(f, "wall_s"), stat(b, "wall_s")
            out.append(f"| {n} | {label} | {fmt_wall(flw)} | {fmt_wall(fw) if f else '-'} | {ratio(fw, flw)} "
                       f"| {fmt_wall(bw) if b else '-'} | {ratio(bw, flw)} | {cpu2(stat(fl, 'host_cpu_s'))} "
                       f"| {cpu2(stat(f, 'host_cpu_s'))} | {cpu2(stat(b, 'host_cpu_s'))} |")
    return out


def before_after_table(runs, sizes):
    """fsfleet built from --before-rev against this tree, operation by operation."""
    if not any(k[0] == "fsfleet-before" for k in runs):
        return []
    out = ["", "fsfleet before (bench/run --before-rev) and after:", "",
           "| hosts | operation | before wall s | after wall s | after / before | hosts' CPU s, before "
           "| hosts' CPU s, after | controller CPU s, before | controller CPU s, after |",
           "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for n in sizes:
        for op, label in OPS:
            b, f = runs.get(("fsfleet-before", op, n), []), runs.get(("fsfleet", op, n), [])
            if not b or not f:
                continue
            bw, fw = stat(b, "wall_s"), stat(f, "wall_s")
            out.append(f"| {n} | {label} | {fmt_wall(bw)} | {fmt_wall(fw)} | {ratio(fw, bw)} "
                       f"| {cpu2(stat(b, 'host_cpu_s'))} | {cpu2(stat(f, 'host_cpu_s'))} "
                       f"| {cpu2(stat(b, 'cpu_s'))} | {cpu2(stat(f, 'cpu_s'))} |")
    return out


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main():
    results, docs = sys.argv[1], Path(sys.argv[2])
    runs = load(results)
    sizes = sorted({k[2] for k in runs})
    repo = Path(__file__).resolve().parent.parent
    venv_bin = Path(sys.executable).parent

    lines = ["fsfleet against Ansible:", ""]
    lines.append("| hosts | operation | fsfleet wall s | Ansible wall s | speed-up | fsfleet peak RSS MB | Ansible peak RSS MB | fsfleet CPU s | Ansible CPU s | hosts' CPU s, fsfleet | hosts' CPU s, Ansible |")
    lines.append("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        for op, label in OPS:
            f, a = runs.get(("fsfleet", op, n), []), runs.get(("ansible", op, n), [])
            fw, aw = stat(f, "wall_s"), stat(a, "wall_s")
            fr, ar = stat(f, "maxrss_kb"), stat(a, "maxrss_kb")
            fc, ac = stat(f, "cpu_s"), stat(a, "cpu_s")
            fh, ah = stat(f, "host_cpu_s"), stat(a, "host_cpu_s")
            speed = f"{aw[0] / fw[0]:.1f}x" if fw and aw and fw[0] > 0 else "-"
            mb = lambda s: f"{s[0] / 1024:.0f}" if s else "-"  # noqa: E731
            cpu = lambda s: f"{s[0]:.2f}" if s else "-"  # noqa: E731
            if not f and not a:
                continue
            # No runs at all (the tool was not benchmarked) is "-"; runs that all failed, "failed".
            wall = lambda rs, st: fmt_wall(st) if rs else "-"  # noqa: E731
            lines.append(f"| {n} | {label} | {wall(f, fw)} | {wall(a, aw)} | {speed} | {mb(fr)} | {mb(ar)} | {cpu(fc)} | {cpu(ac)} | {cpu(fh)} | {cpu(ah)} |")
    lines += floor_table(runs, sizes)
    lines += before_after_table(runs, sizes)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (op, label) in zip(axes, PLOT_OPS):
        for tool, style, color in zip(TOOLS, ["o-", "s--"], ["C0", "C1"]):
            xs, ys, lo, hi = [], [], [], []
            for n in sizes:
                s = stat(runs.get((tool, op, n), []), "wall_s")
                if s:
                    xs.append(n); ys.append(s[0]); lo.append(s[0] - s[1]); hi.append(s[2] - s[0])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, color=color, capsize=3, label=tool)
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xticks(sizes); ax.set_xticklabels([str(s) for s in sizes])
        ax.set_title(label); ax.set_xlabel("hosts"); ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("wall time, s (median, min-max)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(docs / "performance.png", dpi=100)

    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        mem = f"{int(open('/proc/meminfo').readline().split()[1]) // 1024 // 1024} GiB"
    except (OSError, ValueError, IndexError):
        pass
    block = [
        "<!-- bench:begin (written by bench/report.py from target/bench/results.jsonl) -->",
        "",
        f"Machine: {cpu}, {len(open('/proc/cpuinfo').read().split('processor')) - 1} cores, {mem} RAM, "
        f"{platform.system()} {platform.release()}; the controller and every host container share it.",
        f"Versions: {version([str(repo / 'target/release/fsfleet'), '--version'])} (release build); "
        f"{version([str(venv_bin / 'ansible-playbook'), '--version'])}; "
        f"{version(['docker', '--version'])}.",
        "",
        *lines,
        "",
        "![wall time vs hosts](performance.png)",
        "",
        "<!-- bench:end -->",
    ]
    page = docs / "performance.md"
    text = page.read_text() if page.exists() else "# Performance\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"
    text = re.sub(r"<!-- bench:begin.*?<!-- bench:end -->", lambda _: "\n".join(block), text, flags=re.S)
    page.write_text(text)


if __name__ == "__main__":
    main()
