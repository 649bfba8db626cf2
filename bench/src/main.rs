//! The benchmark's own tools, with no dependencies so that every arm is
//! driven the same way:
//!
//! - `load`: HTTP/1.1 keep-alive load, closed loop (as fast as answers come)
//!   or at a fixed rate (latency measured from each request's scheduled start,
//!   so a stall is not hidden); prints one JSON line of results.
//! - `stream`: sequential streaming requests; time to the first event, the
//!   gaps between events, and each later event's delay from the upstream's
//!   send (the upstream stamps its send time in the event's id).
//! - `sse-upstream`: a provider that streams a fixed number of events at a
//!   fixed pace.
//! - `spin`: a busy loop, run by `make bench` at the idle scheduling class
//!   on each core, so that no core halts between requests (see
//!   BENCHMARKS.md: on a VM a halted core takes 100 µs and more to wake).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("load") => load(&args[1..]),
        Some("stream") => stream(&args[1..]),
        Some("sse-upstream") => sse_upstream(&args[1..]),
        Some("spin") => spin(),
        _ => Err("usage: tollgate-bench load|stream|sse-upstream|spin [--flags]".to_string()),
    };
    if let Err(e) = result {
        eprintln!("tollgate-bench: {e}");
        std::process::exit(1);
    }
}

/// Keeps a core busy. No `spin_loop` hint: a hypervisor may take a long
/// run of PAUSE instructions as a spinning lock and deschedule the vCPU.
fn spin() -> Result<(), String> {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match flag(args, name) {
        Some(v) => v.parse().map_err(|_| format!("{name}: bad value {v:?}")),
        None => Ok(default),
    }
}

/// `http://host:port/path` → ("host:port", "/path").
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((authority.to_string(), if path.is_empty() { "/".into() } else { path.into() }))
}

fn build_request(args: &[String]) -> Result<(String, Vec<u8>), String> {
    let url = flag(args, "--url").ok_or("--url is required")?;
    let (authority, path) = split_url(&url)?;
    let body = match flag(args, "--body-file") {
        Some(f) => std::fs::read(&f).map_err(|e| format!("{f}: {e}"))?,
        None => Vec::new(),
    };
    let mut req = format!("POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    for (i, a) in args.iter().enumerate() {
        if a == "--header" {
            if let Some(h) = args.get(i + 1) {
                req.push_str(h);
                req.push_str("\r\n");
            }
        }
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&body);
    Ok((authority, bytes))
}

/// Reads one response; returns (status, body length). Handles Content-Length
/// and chunked bodies.
fn read_response(r: &mut BufReader<TcpStream>, mut on_chunk: impl FnMut(&[u8])) -> std::io::Result<u16> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut buf = vec![0u8; size + 2];
            r.read_exact(&mut buf)?;
            if size == 0 {
                break;
            }
            on_chunk(&buf[..size]);
        }
    } else {
        let mut buf = vec![0u8; length.unwrap_or(0)];
        r.read_exact(&mut buf)?;
        on_chunk(&buf);
    }
    Ok(status)
}

fn connect(authority: &str) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect(authority)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let r = BufReader::with_capacity(256 * 1024, s.try_clone()?);
    Ok((s, r))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `load --url U --body-file F [--header "k: v"]... --connections N
///  --duration S [--rate R] [--warmup S]`
fn load(args: &[String]) -> Result<(), String> {
    let (authority, request) = build_request(args)?;
    let connections: usize = num(args, "--connections", 1)?;
    let duration: f64 = num(args, "--duration", 5.0)?;
    let warmup: f64 = num(args, "--warmup", 1.0)?;
    let rate: f64 = num(args, "--rate", 0.0)?;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(duration);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let (authority, request) = (authority.clone(), request.clone());
            std::thread::spawn(move || -> Result<(Vec<u64>, u64, u64), String> {
                let (mut s, mut r) = connect(&authority).map_err(|e| e.to_string())?;
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                // Every answer, the warm-up's included: what the proxy's CPU
                // time over the whole run is divided by.
                let mut answered = 0u64;
                // At a fixed rate, this connection's share of it, offset so
                // connections do not fire together.
                let interval = (rate > 0.0).then(|| Duration::from_secs_f64(connections as f64 / rate));
                let mut next = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / connections as f64));
                while Instant::now() < start {
                    std::thread::sleep(Duration::from_micros(200));
                }
                loop {
                    if interval.is_some() {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                    let sent = if interval.is_some() { next } else { Instant::now() };
                    if sent >= end {
                        break;
                    }
                    let status = if s.write_all(&request).is_ok() { read_response(&mut r, |_| {}).ok() } else { None };
                    let ok = status == Some(200);
                    if !ok && std::env::var_os("BENCH_DEBUG").is_some() {
                        eprintln!("request failed: status {status:?}");
                    }
                    let done = Instant::now();
                    answered += 1;
                    if sent >= measure_from {
                        if ok {
                            lat.push(done.duration_since(sent).as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                    if !ok {
                        (s, r) = connect(&authority).map_err(|e| e.to_string())?;
                    }
                    if let Some(i) = interval {
                        next += i;
                    }
                }
                Ok((lat, errors, answered))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut answered = 0;
    for t in threads {
        let (lat, e, n) = t.join().map_err(|_| "a load thread panicked")??;
        all.extend(lat);
        errors += e;
        answered += n;
    }
    all.sort_unstable();
    let mean = if all.is_empty() { 0.0 } else { all.iter().sum::<u64>() as f64 / all.len() as f64 };
    println!(
        "{{\"requests\":{},\"answered\":{},\"errors\":{},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"mean_us\":{:.1}}}",
        all.len(),
        answered,
        errors,
        all.len() as f64 / duration,
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        mean
    );
    Ok(())
}

/// `stream --url U --body-file F [--header ...] --requests N`: time to the
/// first SSE event with content, the gaps between events, and the delay of
/// every event after the first: its arrival less the send time
/// `sse-upstream` stamped in its id (both read the same clock). A gap cannot
/// show a delay every event pays alike; the stamp does.
fn stream(args: &[String]) -> Result<(), String> {
    let (authority, request) = build_request(args)?;
    let requests: usize = num(args, "--requests", 20)?;
    let (mut s, mut r) = connect(&authority).map_err(|e| e.to_string())?;
    let mut ttft = Vec::new();
    let mut gaps = Vec::new();
    let mut delays = Vec::new();
    let mut total = Vec::new();
    for _ in 0..requests {
        let start = Instant::now();
        let mut first = None;
        let mut last = start;
        s.write_all(&request).map_err(|e| e.to_string())?;
        let status = read_response(&mut r, |chunk| {
            let now = Instant::now();
            if chunk.windows(8).any(|w| w == b"content\"") {
                if first.is_none() {
                    first = Some(now.duration_since(start).as_micros() as u64);
                } else {
                    gaps.push(now.duration_since(last).as_micros() as u64);
                    if let Some(sent) = sent_ns(chunk) {
                        delays.push(wall_ns().saturating_sub(sent) / 1000);
                    }
                }
                last = now;
            }
        })
        .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("status {status}"));
        }
        ttft.push(first.unwrap_or(0));
        total.push(start.elapsed().as_micros() as u64);
    }
    ttft.sort_unstable();
    gaps.sort_unstable();
    delays.sort_unstable();
    total.sort_unstable();
    if delays.len() != gaps.len() {
        return Err(format!("{} of {} events carried no send stamp", gaps.len() - delays.len(), gaps.len()));
    }
    println!(
        "{{\"requests\":{requests},\"ttft_p50_us\":{},\"ttft_p99_us\":{},\"gap_p50_us\":{},\"gap_p99_us\":{},\"delay_p50_us\":{},\"delay_p99_us\":{},\"total_p50_us\":{}}}",
        percentile(&ttft, 0.5),
        percentile(&ttft, 0.99),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        percentile(&total, 0.5)
    );
    Ok(())
}

/// The wall clock in ns: the stamp's clock, the same for both processes.
fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The send time `sse-upstream` stamped in an event's id (`"id":"s<ns>"`).
fn sent_ns(chunk: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"id\":\"s";
    let at = chunk.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits = chunk.get(at..)?.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(chunk.get(at..at + digits)?).ok()?.parse().ok()
}

/// `sse-upstream --port P --events N --interval-ms M`: answers every POST
/// with N chat.completion.chunk events M ms apart, then a usage chunk and
/// [DONE].
fn sse_upstream(args: &[String]) -> Result<(), String> {
    let port: u16 = num(args, "--port", 0)?;
    let events: usize = num(args, "--events", 10)?;
    let interval = Duration::from_millis(num(args, "--interval-ms", 10)?);
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    println!("{}", listener.local_addr().map_err(|e| e.to_string())?.port());
    std::io::stdout().flush().ok();
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || serve_sse(conn, events, interval));
    }
    Ok(())
}

fn serve_sse(conn: TcpStream, events: usize, interval: Duration) {
    let _ = conn.set_nodelay(true);
    let Ok(read_half) = conn.try_clone() else { return };
    let mut r = BufReader::new(read_half);
    let mut w = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let chunk = |w: &mut TcpStream, data: &str| -> std::io::Result<()> {
            w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        };
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        for i in 0..events {
            if i > 0 {
                std::thread::sleep(interval);
            }
            // The id carries the send time, for the client's per-event delay.
            let ev = format!("data: {{\"id\":\"s{}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n", wall_ns());
            if chunk(&mut w, &ev).is_err() {
                return;
            }
        }
        let usage = format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{{\"prompt_tokens\":20,\"completion_tokens\":{events},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n", 20 + events);
        if chunk(&mut w, &usage).is_err() || w.write_all(b"0\r\n\r\n").is_err() {
            return;
        }
    }
}
