"""Issue 5's targets, checked against one run of `make bench`.

`bench/run.py` prints this check at the end of every run. For a saved run,
`python3 bench/targets.py [bench/results.json]` prints it again.

Values are shown to a tenth of a microsecond. A median over an even number
of pairs can end in .5, and a whole-number table would round +50.5 down to
"+50" (Python rounds half to even), which would hide a miss of a 50 µs
target.
"""

import json
import math
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
#
# Since c1c6f69 the soak drives plain Envoy at the same rate beside the soak
# arm and reads its RSS at the same moments. Plain Envoy's own RSS creeps
# under that load, with no filter at all (a page a minute for a few minutes
# in the run of e05a197, as much as the soak arm's): Envoy's allocator
# touching pages, not anything the filter keeps. Where the run has those
# readings, the rules apply to the soak arm's RSS less plain Envoy's at each
# reading, so that a leak of the filter's still shows and Envoy's own creep
# does not count against it. Runs without them are judged on the arm alone.
SECOND_HALF_SLACK_KIB = 8
WHOLE_SOAK_SLACK = 0.001
SOAK_SECONDS = 600


def paired_cpu(summary):
    """Whether the run measured CPU at the fixed rate in paired slices
    (runs since this was added; CPU_PAIRS=0 leaves it out)."""
    return bool(summary.get("paired_cpu_us"))


def cpu(summary, arm, load):
    """An arm's extra CPU a 1 KB request over plain Envoy ("fixed" or
    "saturated"); None if the run had no 1 KB bodies. At the fixed rate,
    the paired slices' figure where the run has one, else the rounds'."""
    if "1 KB envoy" not in summary:
        return None
    if load == "fixed" and paired_cpu(summary):
        return summary["paired_cpu_us"].get(arm)
    if arm == "native":
        return summary["native_extra_cpu_us"]["1 KB"][load]
    key = "extra_cpu_us" if load == "fixed" else "extra_cpu_us_saturated"
    return summary[key]["1 KB"]


def median_interval(values, confidence=0.95):
    """The interval that holds the true median of what `values` sample with
    at least `confidence`, from order statistics alone (no assumption about
    the distribution): the k-th smallest to the k-th largest value, for the
    largest k whose tails under Binomial(n, 1/2) stay within 1 - confidence.
    None when there are too few values for any such k (below six at 95%:
    even their whole range would hold the median less often than asked)."""
    d = sorted(values)
    n = len(d)
    if not n or 2 / 2 ** n > 1 - confidence:
        return None
    k, tail = 1, 0.0
    while k < n // 2:
        # tail is now P(B <= k - 1) for B ~ Binomial(n, 1/2): one side of
        # the k-th value's miss. Widen to k + 1 only if both sides of its
        # miss, 2 P(B <= k), stay within what the confidence allows.
        tail += math.comb(n, k - 1) / 2 ** n
        if 2 * (tail + math.comb(n, k) / 2 ** n) > 1 - confidence:
            break
        k += 1
    return [d[k - 1], d[n - k]]


def settled(interval, limit):
    """Whether a run's interval keeps clear of a limit: None if not known."""
    if not interval:
        return None
    low, high = interval
    return high <= limit or low > limit


def judged(value, limit, interval=None):
    """A figure (with its interval, when the run recorded one), whether it
    meets its limit, and whether the interval keeps clear of the limit:
    ["—", None, None] if not measured."""
    if value is None:
        return ["—", None, None]
    text = f"{value:+.1f} µs"
    if interval:
        text += f" ({tenths(interval[0])} to {tenths(interval[1])})"
    return [text, value <= limit, settled(interval, limit)]


def tenths(x):
    """A signed figure to a tenth, without a trailing .0, and never -0:
    shown as finely as it is judged (30.4 must not read +30)."""
    r = round(x, 1) + 0.0
    return f"{r:+.0f}" if r == int(r) else f"{r:+.1f}"


def rss_flat(readings, beside=None):
    """Whether a soak's RSS readings (KiB, in order) stay flat, and why not.
    `beside`: plain Envoy's RSS read at the same moments under the same load
    (None, or a list of another length, judges the readings alone)."""
    if len(readings) < 2:
        return False, "no soak readings"
    if beside and len(beside) == len(readings):
        excess = [mine - plain for mine, plain in zip(readings, beside)]
        flat, why = moves(excess, readings[0])
        if flat:
            return True, f"{readings[0]} to {readings[-1]} KiB, plain Envoy beside it {beside[0]} to {beside[-1]}; the difference {why}"
        alone = moves(readings, readings[0])[1]
        plain = moves(beside, beside[0])[1]
        return False, f"more than plain Envoy's beside it: the difference {why} (alone: {alone}; plain Envoy: {plain})"
    flat, why = moves(readings, readings[0])
    return flat, (f"{readings[0]} to {readings[-1]} KiB" if flat else why)


def moves(series, base):
    """The two rules on one series: whether it stays flat, and how it moved
    (`base`: what the whole soak's growth is a share of)."""
    # From the reading at the soak's midpoint (the fifth of ten) to the end.
    half = series[len(series) // 2 - 1:]
    second_half = max(half) - min(half)
    whole = series[-1] - series[0]
    if second_half > SECOND_HALF_SLACK_KIB:
        return False, f"moved {second_half} KiB over the second half"
    if whole > base * WHOLE_SOAK_SLACK:
        return False, f"grew {whole} KiB over the soak"
    return True, f"moved {second_half} KiB over the second half and {whole:+d} over the soak"


def check(summary):
    """Rows of (target, native's figure, met, wasm's figure, met, native's
    interval clear of the limit, wasm's); met is None where the run did not
    measure it, and clear None where it recorded no interval (runs before
    aa5fa23, and too few rounds) or the target has none."""
    rate = summary.get("rate", 1000)
    intervals = summary.get("intervals", {})
    rows = []

    def row(what, native, wasm):
        rows.append((what, native[0], native[1], wasm[0], wasm[1], native[2], wasm[2]))

    for what, name, figure, limit in LATENCY:
        # An arm or size the run left out is not measured; a row without its
        # figure is an error, not a pass.
        native, wasm = [
            judged(summary[r][figure], limit, intervals.get(f"{r} {figure}")) if (r := name.format(arm=arm)) in summary
            else judged(None, limit) for arm in ("native", "tollgate")]
        row(f"{what} ≤ {limit} µs", native, wasm)
    for load, label in (("fixed", f"at {rate} requests/s"), ("saturated", "on a saturated core")):
        which = "fixed_paired" if load == "fixed" and paired_cpu(summary) else load
        native, wasm = [judged(cpu(summary, arm, load), 30, intervals.get(f"1 KB {arm} extra_cpu_{which}"))
                        for arm in ("native", "tollgate")]
        row(f"1 KB: extra proxy CPU a request, {label} ≤ 30 µs", native, wasm)
    readings = summary.get("soak_rss_kib") or []
    # Runs before 4445694 did not record the soak's length and arm.
    soak_s = summary.get("soak_s", 0)
    arm = summary.get("soak_arm", "")
    flat, why = rss_flat(readings, (summary.get("soak_beside") or {}).get("envoy_rss_kib"))
    long_enough = soak_s >= SOAK_SECONDS
    if not long_enough:
        why = f"soak of {soak_s} s, not {SOAK_SECONDS}" if readings else "no soak (SOAK=600)"
    soaked, not_soaked = [why, flat and long_enough], ["not soaked in this run", None]
    # The soak runs through one arm only.
    native, wasm = {"native": (soaked, not_soaked), "tollgate": (not_soaked, soaked)}.get(arm, (not_soaked, not_soaked))
    row(f"RSS flat over a {SOAK_SECONDS // 60}-minute soak at 500 requests/s", [*native, None], [*wasm, None])
    peers = [p for p in ("litellm", "tensorzero") if f"1 KB {p}" in summary]
    beside = [", ".join(peers) or "none (run with BENCH_PEERS=1)", len(peers) == 2, None]
    row("peers' rows in the same run (LiteLLM, TensorZero)", beside, beside)
    return rows


def table(summary):
    """The check as a Markdown table, and a closing line per build."""
    rows = check(summary)
    with_intervals = bool(summary.get("intervals"))
    heading = " (95% interval)" if with_intervals else ""
    lines = [f"| target | native{heading} | met | wasm{heading} | met |", "|---|---|---|---|---|"]
    shown = {True: "yes", False: "**no**", None: "not measured"}
    for what, native, native_ok, wasm, wasm_ok, _, _ in rows:
        lines.append(f"| {what} | {native} | {shown[native_ok]} | {wasm} | {shown[wasm_ok]} |")
    lines.append("")
    for name, index, clear in (("native", 2, 5), ("wasm", 4, 6)):
        missed = [row[0].split(" ≤ ")[0] for row in rows if row[index] is False]
        unmeasured = [row[0].split(" ≤ ")[0] for row in rows if row[index] is None]
        unsettled = [row[0].split(" ≤ ")[0] for row in rows if row[clear] is False]
        verdict = "every target measured is met" if not missed else f"{len(missed)} of {len(rows)} targets missed ({'; '.join(missed)})"
        if unmeasured:
            verdict += f"; not measured: {'; '.join(unmeasured)}"
        if unsettled:
            verdict += (f"; the limit lies inside the 95% interval, so this run's samples cannot say which side of it "
                        f"the median is on: {'; '.join(unsettled)}")
        lines.append(f"The {name} build in this run: {verdict}.")
    if with_intervals:
        lines += ["", "A figure is the median over the run's pairs (or rounds) of the arm's value less plain Envoy's; "
                  "its interval holds the median of what this run sampled with 95% confidence (order statistics, no "
                  "assumption about the distribution; it says nothing of how another hour would read). Met or not is "
                  "read from the median. Under six rounds CPU gets no interval; with six to eight it is the whole "
                  "range of the rounds."]
    if paired_cpu(summary):
        lines += ["", f"CPU at {summary.get('rate', 1000)} requests/s is read from the run's {summary.get('cpu_pairs')} pairs "
                  "of adjacent slices; the rounds' figure is in the CPU table above."]
    return "\n".join(lines)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/results.json"
    with open(path) as f:
        print(table(json.load(f)))
