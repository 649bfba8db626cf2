"""Issue 5's targets, checked against one run of `make bench`.

`bench/run.py` prints this check at the end of every run. For a saved run,
`python3 bench/targets.py [bench/results.json]` prints it again.

Values are shown to a tenth of a microsecond. A median over an even number
of pairs can end in .5, and a whole-number table would round +50.5 down to
"+50" (Python rounds half to even), which would hide a miss of a 50 µs
target.
"""

import json
import sys

# (what, the summary's row for the arm, the figure in that row, the limit in µs)
LATENCY = [
    ("1 KB: p50 added over plain Envoy, one connection", "1 KB {arm}", "added_vs_envoy_us", 30),
    ("100 KB: p50 added over plain Envoy, one connection", "100 KB {arm}", "added_vs_envoy_us", 60),
    ("streaming: time to first token added", "stream {arm}", "added_ttft_vs_envoy_us", 50),
]

# RSS counts as flat when it moves by at most two pages over the soak's
# second half, and grows by at most 0.1% over the whole soak. A leak of a
# tenth of a byte a request (at 500 requests/s, 15 KB over the last five
# minutes) breaks the first rule; a step that later stops, of more than
# about 73 KiB here, the second.
SECOND_HALF_SLACK_KIB = 8
WHOLE_SOAK_SLACK = 0.001
SOAK_SECONDS = 600


def cpu(summary, arm, load):
    """An arm's extra CPU a 1 KB request over plain Envoy ("fixed" or
    "saturated"); None if the run had no 1 KB bodies."""
    if "1 KB envoy" not in summary:
        return None
    if arm == "native":
        return summary["native_extra_cpu_us"]["1 KB"][load]
    key = "extra_cpu_us" if load == "fixed" else "extra_cpu_us_saturated"
    return summary[key]["1 KB"]


def judged(value, limit):
    """A figure and whether it meets its limit: ["—", None] if not measured."""
    if value is None:
        return ["—", None]
    return [f"{value:+.1f} µs", value <= limit]


def rss_flat(readings):
    """Whether a soak's RSS readings (KiB, in order) stay flat, and why not."""
    if len(readings) < 2:
        return False, "no soak readings"
    # From the reading at the soak's midpoint (the fifth of ten) to the end.
    half = readings[len(readings) // 2 - 1:]
    second_half = max(half) - min(half)
    whole = readings[-1] - readings[0]
    if second_half > SECOND_HALF_SLACK_KIB:
        return False, f"moved {second_half} KiB over the second half"
    if whole > readings[0] * WHOLE_SOAK_SLACK:
        return False, f"grew {whole} KiB over the soak"
    return True, f"{readings[0]} to {readings[-1]} KiB"


def check(summary):
    """Rows of (target, native's figure, met, wasm's figure, met); met is None
    where the run did not measure it."""
    rate = summary.get("rate", 1000)
    rows = []
    for what, row, figure, limit in LATENCY:
        # An arm or size the run left out is not measured; a row without its
        # figure is an error, not a pass.
        values = [summary[r][figure] if (r := row.format(arm=arm)) in summary else None for arm in ("native", "tollgate")]
        rows.append((f"{what} ≤ {limit} µs", *judged(values[0], limit), *judged(values[1], limit)))
    for load, label in (("fixed", f"at {rate} requests/s"), ("saturated", "on a saturated core")):
        native, wasm = cpu(summary, "native", load), cpu(summary, "tollgate", load)
        rows.append((f"1 KB: extra proxy CPU a request, {label} ≤ 30 µs", *judged(native, 30), *judged(wasm, 30)))
    readings = summary.get("soak_rss_kib") or []
    # Runs before 4445694 did not record the soak's length and arm.
    soak_s = summary.get("soak_s", 0)
    arm = summary.get("soak_arm", "")
    flat, why = rss_flat(readings)
    long_enough = soak_s >= SOAK_SECONDS
    if not long_enough:
        why = f"soak of {soak_s} s, not {SOAK_SECONDS}" if readings else "no soak (SOAK=600)"
    soaked, not_soaked = [why, flat and long_enough], ["not soaked in this run", None]
    # The soak runs through one arm only.
    native, wasm = {"native": (soaked, not_soaked), "tollgate": (not_soaked, soaked)}.get(arm, (not_soaked, not_soaked))
    rows.append((f"RSS flat over a {SOAK_SECONDS // 60}-minute soak at 500 requests/s", *native, *wasm))
    peers = [p for p in ("litellm", "tensorzero") if f"1 KB {p}" in summary]
    beside = (", ".join(peers) or "none (run with BENCH_PEERS=1)", len(peers) == 2)
    rows.append(("peers' rows in the same run (LiteLLM, TensorZero)", *beside, *beside))
    return rows


def table(summary):
    """The check as a Markdown table, and a closing line per build."""
    rows = check(summary)
    lines = ["| target | native | met | wasm | met |", "|---|---|---|---|---|"]
    shown = {True: "yes", False: "**no**", None: "not measured"}
    for what, native, native_ok, wasm, wasm_ok in rows:
        lines.append(f"| {what} | {native} | {shown[native_ok]} | {wasm} | {shown[wasm_ok]} |")
    lines.append("")
    for name, index in (("native", 2), ("wasm", 4)):
        missed = [row[0].split(" ≤ ")[0] for row in rows if row[index] is False]
        unmeasured = [row[0].split(" ≤ ")[0] for row in rows if row[index] is None]
        verdict = "every target measured is met" if not missed else f"{len(missed)} of {len(rows)} targets missed ({'; '.join(missed)})"
        if unmeasured:
            verdict += f"; not measured: {'; '.join(unmeasured)}"
        lines.append(f"The {name} build in this run: {verdict}.")
    return "\n".join(lines)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/results.json"
    with open(path) as f:
        print(table(json.load(f)))
