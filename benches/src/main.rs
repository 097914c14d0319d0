//! Benchmarks side by side (issue 6): the raw floor, rpc-core, tarpc, tonic,
//! remoc and capnp-rpc over TCP loopback, interleaved in rounds so machine
//! noise hits all alike; each figure is the median of the rounds, with min–max.
//!
//! ```sh
//! scripts/install-bench-deps.sh     # protoc and capnp, for tonic and capnp-rpc
//! cargo run --release --manifest-path benches/Cargo.toml -- [--quick] [--json PATH]
//! ```
//!
//! Figures go to stdout as a table and to `benches/results/latest.json` (one
//! object: figure name → {median, min, max, unit}); see BENCHMARKS.md.
//!
//! Instruction counts (callgrind, `scripts/costs.sh --peers`: ours, raw and
//! tonic's stream) close the report in a full run; `--costs` / `--no-costs`
//! run them or not in any mode (`--quick` leaves them out unless asked).
//!
//! Other options: `--only GROUPS` (comma-separated: unary, inflight, chain,
//! stream, bulk, memory, allocs, game, costs), `--contenders NAMES` (raw,
//! raw(per-message), ours, ours(default window), tarpc, tonic, remoc,
//! capnp-rpc; ratios need raw), `--rounds N`, `--stream-items N` (a fixed
//! stream length instead of calibrating one per contender). For profiling,
//! `RPC_BENCHES_CHAIN=pipelined` (or `awaited`) runs one chain variant only.

mod alloc;
mod common;
mod costs;
mod game;
mod latency;
mod ours;
mod raw;
mod rt;
mod stats;
mod peers {
    #[cfg(all(feature = "capnp", have_capnp))]
    pub mod capnp_peer;
    #[cfg(feature = "remoc")]
    pub mod remoc_peer;
    #[cfg(feature = "tarpc")]
    pub mod tarpc_peer;
    #[cfg(all(feature = "tonic", have_protoc))]
    pub mod tonic_peer;
    #[cfg(all(feature = "tonic", have_protoc))]
    pub mod tonic_service;
}

#[cfg(all(feature = "capnp", have_capnp))]
#[allow(clippy::all, unused, unreachable_pub, missing_docs)]
mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Contender, Res};
use stats::{fmt, quantile_us, Figures};

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

/// How much work each run does.
struct Plan {
    quick: bool,
    rounds: usize,
    unary_calls: usize,
    inflight_calls: usize,
    chains: usize,
    /// Target duration of one stream run (counts are calibrated per contender).
    stream_run: Duration,
    bulk_bytes: u64,
    ahead_items: u64,
    ahead_capacity: u32,
    alloc_calls: usize,
    alloc_items: u64,
    game_ticks: u64,
    game_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                rounds: 3,
                unary_calls: 1_500,
                inflight_calls: 4_000,
                chains: 40,
                stream_run: Duration::from_millis(80),
                bulk_bytes: 64 << 20,
                ahead_items: 100_000,
                ahead_capacity: 1_000,
                alloc_calls: 200,
                alloc_items: 20_000,
                game_ticks: 50,
                game_runs: 3,
            }
        } else {
            Plan {
                quick,
                rounds: 7,
                unary_calls: 3_000,
                inflight_calls: 30_000,
                chains: 300,
                stream_run: Duration::from_millis(300),
                bulk_bytes: 512 << 20,
                ahead_items: 1_000_000,
                ahead_capacity: 1_000,
                alloc_calls: 1_000,
                alloc_items: 100_000,
                game_ticks: 200,
                game_runs: 5,
            }
        }
    }
}

struct Opts {
    quick: bool,
    json: PathBuf,
    only: Option<Vec<String>>,
    contenders: Option<Vec<String>>,
    rounds: Option<usize>,
    stream_items: Option<u64>,
    /// `--costs` / `--no-costs`; by default, counted in a full run only.
    costs: Option<bool>,
}

impl Opts {
    fn group(&self, g: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|x| x == g))
    }

    /// Why the instruction counts are left out, if they are.
    fn costs_left_out(&self) -> Option<&'static str> {
        match self.costs {
            Some(false) => Some("--no-costs"),
            Some(true) => None,
            None if !self.group("costs") => Some("not in --only"),
            None if self.quick && self.only.is_none() => Some("--quick; --costs counts them"),
            None => None,
        }
    }
}

const GROUPS: [&str; 9] = ["unary", "inflight", "chain", "stream", "bulk", "memory", "allocs", "game", "costs"];

fn usage() -> ! {
    eprintln!(
        "usage: rpc-benches [--quick] [--json PATH] [--only {}] [--contenders {}] [--rounds N] [--stream-items N] \
         [--costs|--no-costs]",
        GROUPS.join(","),
        CONTENDERS.join(",")
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let default_json = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results/latest.json");
    let mut opts = Opts {
        quick: false,
        json: default_json,
        only: None,
        contenders: None,
        rounds: None,
        stream_items: None,
        costs: None,
    };
    let mut args = std::env::args().skip(1);
    let list = |s: String| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--costs" => opts.costs = Some(true),
            "--no-costs" => opts.costs = Some(false),
            "--json" => opts.json = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--only" => {
                let only: Vec<String> = list(args.next().unwrap_or_else(|| usage()));
                if let Some(bad) = only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                    eprintln!("unknown group {bad}");
                    usage();
                }
                opts.only = Some(only);
            }
            "--contenders" => opts.contenders = Some(list(args.next().unwrap_or_else(|| usage()))),
            "--rounds" => opts.rounds = Some(args.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage())),
            "--stream-items" => {
                opts.stream_items = Some(args.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage()))
            }
            "-h" | "--help" => usage(),
            other => {
                eprintln!("unknown argument {other}");
                usage()
            }
        }
    }
    opts
}

fn main() {
    let opts = parse_args();
    let server = rt::ServerThread::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    let started = Instant::now();
    let mut figures = local.block_on(&runtime, run(&opts, &server));
    // Counted after the timings, so valgrind never runs beside them.
    let counts = match opts.costs_left_out() {
        None => costs::measure(),
        Some(why) => costs::Outcome::Skipped(format!("not run ({why})")),
    };
    costs::add_to(&mut figures, &counts);
    print_table(&figures);
    print_targets(&figures);
    print!("\n{}", costs::table(&counts));
    if let Some(dir) = opts.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&opts.json, figures.to_json()) {
        Ok(()) => println!("\nwrote {}", opts.json.display()),
        Err(e) => eprintln!("\ncannot write {}: {e}", opts.json.display()),
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}

type Boxed = Box<dyn Contender>;

/// Table order.
const CONTENDERS: [&str; 8] =
    ["raw", "raw(per-message)", "ours", "ours(default window)", "tarpc", "tonic", "remoc", "capnp-rpc"];

/// Sets up the wanted contenders; also returns ours with the default sequence
/// window (for the stream figure, when wanted, and the memory and alloc figures).
async fn setup(opts: &Opts, server: &rt::ServerThread, figures: &mut Figures) -> (Vec<Boxed>, Option<ours::Ours>) {
    let wanted = |name: &str| opts.contenders.as_ref().is_none_or(|list| list.iter().any(|c| c == name));
    let mut all: Vec<Boxed> = Vec::new();
    let skip = |figures: &mut Figures, name: &str, why: String| {
        println!("{name:<10} {why}");
        figures.skipped.push((name.to_string(), why));
    };
    macro_rules! contender {
        ($name:expr, $setup:expr) => {
            if wanted($name) {
                match $setup.await {
                    Ok(c) => all.push(Box::new(c)),
                    Err(e) => skip(figures, $name, format!("skipped: setup failed: {e}")),
                }
            }
        };
    }
    contender!("raw", raw::Raw::setup(server));
    contender!("raw(per-message)", raw::RawPerMessage::setup(server));
    let mut ours = None;
    if wanted("ours") {
        match ours::Ours::setup(server).await {
            Ok(o) => {
                let default_window = o.default_window();
                if wanted(default_window.name()) {
                    all.push(Box::new(o.default_window()));
                }
                ours = Some(default_window);
                all.push(Box::new(o));
            }
            Err(e) => skip(figures, "ours", format!("skipped: setup failed: {e}")),
        }
    }
    #[cfg(feature = "tarpc")]
    contender!("tarpc", peers::tarpc_peer::Tarpc::setup(server));
    #[cfg(not(feature = "tarpc"))]
    skip(figures, "tarpc", "skipped: built without the `tarpc` feature".into());
    #[cfg(all(feature = "tonic", have_protoc))]
    contender!("tonic", peers::tonic_peer::Tonic::setup(server));
    #[cfg(all(feature = "tonic", not(have_protoc)))]
    skip(figures, "tonic", format!("skipped: {}", option_env!("BENCH_TONIC_SKIP").unwrap_or("protoc not found")));
    #[cfg(not(feature = "tonic"))]
    skip(figures, "tonic", "skipped: built without the `tonic` feature".into());
    #[cfg(feature = "remoc")]
    contender!("remoc", peers::remoc_peer::Remoc::setup(server));
    #[cfg(not(feature = "remoc"))]
    skip(figures, "remoc", "skipped: built without the `remoc` feature".into());
    #[cfg(all(feature = "capnp", have_capnp))]
    contender!("capnp-rpc", peers::capnp_peer::Capnp::setup(server));
    #[cfg(all(feature = "capnp", not(have_capnp)))]
    skip(figures, "capnp-rpc", format!("skipped: {}", option_env!("BENCH_CAPNP_SKIP").unwrap_or("capnp not found")));
    #[cfg(not(feature = "capnp"))]
    skip(figures, "capnp-rpc", "skipped: built without the `capnp` feature".into());
    (all, ours)
}

/// Finds a count for which one stream run takes about `target`.
async fn calibrate(c: &dyn Contender, target: Duration) -> Res<u64> {
    // A first stream may pay for warming up (buffers, HTTP/2 windows): not timed.
    if let Some(run) = c.stream(10_000) {
        run.await?;
    }
    let mut count = 1_000u64;
    loop {
        let Some(run) = c.stream(count) else { return Ok(0) };
        let took = run.await?;
        if took >= target / 8 || count >= 1 << 26 {
            let scaled = count as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-6);
            return Ok((scaled as u64).clamp(1_000, 1 << 26));
        }
        count *= 4;
    }
}

async fn run(opts: &Opts, server: &rt::ServerThread) -> Figures {
    let mut plan = Plan::new(opts.quick);
    if let Some(rounds) = opts.rounds {
        plan.rounds = rounds.max(1);
    }
    let group = |g: &str| opts.group(g);
    let mut figures = Figures::default();
    println!(
        "rpc-benches: {} mode, {} interleaved rounds, TCP loopback; server side and client side each on one thread",
        if plan.quick { "quick" } else { "full" },
        plan.rounds
    );
    let (mut all, ours_default) = setup(opts, server, &mut figures).await;
    let mut failed: Vec<String> = Vec::new();
    let fail = |failed: &mut Vec<String>, figures: &mut Figures, name: &str, what: &str, e: common::BoxError| {
        eprintln!("{name}: {what} failed: {e}");
        figures.skipped.push((name.to_string(), format!("{what} failed: {e}")));
        failed.push(name.to_string());
    };

    // Stream counts, per contender, for runs of about `stream_run`.
    let mut stream_counts: HashMap<String, u64> = HashMap::new();
    if group("stream") {
        for c in all.iter().map(|c| c.as_ref()) {
            let calibrated = match opts.stream_items {
                Some(n) => Ok(if c.stream(0).is_some() { n } else { 0 }),
                None => calibrate(c, plan.stream_run).await,
            };
            match calibrated {
                Ok(0) => {}
                Ok(n) => {
                    stream_counts.insert(c.name().to_string(), n);
                }
                Err(e) => eprintln!("{}: stream calibration failed: {e}", c.name()),
            }
        }
        let mut counts: Vec<_> = stream_counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
        counts.sort();
        println!("stream items per run: {}", counts.join(", "));
    }

    for round in 0..plan.rounds {
        let t0 = Instant::now();
        // Rotate the order each round so no contender always goes first.
        all.rotate_left(if round == 0 { 0 } else { 1 });
        let live: Vec<&dyn Contender> =
            all.iter().filter(|c| !failed.iter().any(|f| f == c.name())).map(|c| c.as_ref()).collect();

        // Unary round trip, sequential. Within a round the contenders take
        // turns in short blocks, so a slow spell of the machine hits all.
        let mut raw_rtt = None;
        if group("unary") {
            let mut samples: HashMap<&str, Vec<Duration>> = HashMap::new();
            let blocks = 10;
            for _ in 0..blocks {
                for c in &live {
                    if failed.iter().any(|f| f == c.name()) {
                        continue;
                    }
                    let Some(run) = c.unary(plan.unary_calls / blocks) else { continue };
                    match run.await {
                        Ok(s) => samples.entry(c.name()).or_default().extend(s),
                        Err(e) => fail(&mut failed, &mut figures, c.name(), "unary", e),
                    }
                }
            }
            let mut medians = HashMap::new();
            for c in &live {
                let Some(s) = samples.get_mut(c.name()) else { continue };
                let med = quantile_us(s, 0.5);
                medians.insert(c.name(), med);
                figures.add(&format!("unary.{}.rtt", c.name()), "µs", med);
                figures.add(&format!("unary.{}.rtt_p99", c.name()), "µs", quantile_us(s, 0.99));
            }
            raw_rtt = medians.get("raw").copied();
            if let Some(floor) = raw_rtt {
                for c in &live {
                    if let Some(m) = medians.get(c.name()).filter(|_| c.name() != "raw") {
                        figures.add(&format!("unary.{}.rtt/raw", c.name()), "x raw echo", m / floor);
                    }
                }
            }
        }

        // 64 calls in flight on one connection.
        if group("inflight") {
            let mut rates = HashMap::new();
            for c in &live {
                let Some(run) = c.inflight(plan.inflight_calls) else { continue };
                match run.await {
                    Ok(took) => {
                        let rate = plan.inflight_calls as f64 / took.as_secs_f64() / 1e3;
                        rates.insert(c.name(), rate);
                        figures.add(&format!("inflight64.{}.rate", c.name()), "kcalls/s", rate);
                    }
                    Err(e) => fail(&mut failed, &mut figures, c.name(), "inflight", e),
                }
            }
            if let Some(floor) = rates.get("raw").copied() {
                for c in &live {
                    if let Some(r) = rates.get(c.name()).filter(|_| !c.name().starts_with("raw")) {
                        figures.add(
                            &format!("inflight64.{}.rate/raw", c.name()),
                            "x raw pipelined echo (batched)",
                            r / floor,
                        );
                    }
                }
            }
            if let (Some(slow), Some(ours)) = (rates.get("raw(per-message)"), rates.get("ours")) {
                figures.add("inflight64.ours.rate/raw(per-message)", "x raw per-message echo", ours / slow);
            }
        }

        // A chain of 10 dependent calls, pipelined and awaited one by one,
        // in blocks taking turns with raw echo calls (for the RTT to compare).
        if group("chain") {
            let mut samples: HashMap<(&str, bool), Vec<Duration>> = HashMap::new();
            let mut rtts = Vec::new();
            let blocks = 10;
            for _ in 0..blocks {
                for c in &live {
                    if c.name() == "raw" {
                        if let Some(run) = c.unary(plan.chains / blocks * 4) {
                            if let Ok(s) = run.await {
                                rtts.extend(s);
                            }
                        }
                    }
                    for pipelined in [true, false] {
                        // For profiling one variant alone: RPC_BENCHES_CHAIN=pipelined|awaited.
                        if std::env::var("RPC_BENCHES_CHAIN")
                            .is_ok_and(|only| only != if pipelined { "pipelined" } else { "awaited" })
                        {
                            continue;
                        }
                        if failed.iter().any(|f| f == c.name()) {
                            continue;
                        }
                        let Some(run) = c.chain(plan.chains / blocks, pipelined) else { continue };
                        match run.await {
                            Ok(s) => samples.entry((c.name(), pipelined)).or_default().extend(s),
                            Err(e) => fail(&mut failed, &mut figures, c.name(), "chain", e),
                        }
                    }
                }
            }
            let floor = if rtts.is_empty() { raw_rtt } else { Some(quantile_us(&mut rtts, 0.5)) };
            for c in &live {
                for pipelined in [true, false] {
                    let Some(s) = samples.get_mut(&(c.name(), pipelined)) else { continue };
                    let label = if pipelined { "pipelined" } else { "awaited" };
                    let med = quantile_us(s, 0.5);
                    figures.add(&format!("chain10.{}.{label}", c.name()), "µs", med);
                    if let Some(floor) = floor {
                        figures.add(&format!("chain10.{}.{label}/rtt", c.name()), "raw RTTs", med / floor);
                    }
                }
            }
        }

        // Small-struct streams, server to client.
        if group("stream") {
            let mut rates = HashMap::new();
            for c in &live {
                let Some(&count) = stream_counts.get(c.name()) else { continue };
                let Some(run) = c.stream(count) else { continue };
                match run.await {
                    Ok(took) => {
                        let rate = count as f64 / took.as_secs_f64() / 1e6;
                        rates.insert(c.name(), rate);
                        figures.add(&format!("stream.{}.rate", c.name()), "M items/s", rate);
                    }
                    Err(e) => fail(&mut failed, &mut figures, c.name(), "stream", e),
                }
            }
            if let Some(floor) = rates.get("raw").copied() {
                for c in CONTENDERS {
                    if let Some(rate) = rates.get(c).filter(|_| c != "raw") {
                        figures.add(&format!("stream.{c}.rate/raw"), "x raw postcard stream", rate / floor);
                    }
                }
            }
        }

        // Bulk bytes, server to client.
        if group("bulk") {
            let mut rates = HashMap::new();
            for c in &live {
                let Some(run) = c.bulk(plan.bulk_bytes) else { continue };
                match run.await {
                    Ok(took) => {
                        let rate = plan.bulk_bytes as f64 / took.as_secs_f64() / 1e9;
                        rates.insert(c.name(), rate);
                        figures.add(&format!("bulk.{}.rate", c.name()), "GB/s", rate);
                    }
                    Err(e) => fail(&mut failed, &mut figures, c.name(), "bulk", e),
                }
            }
            if let (Some(floor), Some(ours)) = (rates.get("raw"), rates.get("ours")) {
                figures.add("bulk.ours.rate/raw", "x raw TCP copy", ours / floor);
            }
        }

        // A producer far ahead of a slow consumer.
        if group("memory") {
            if let Some(o) = &ours_default {
                match o.producer_ahead(plan.ahead_items, plan.ahead_capacity).await {
                    Ok((heap, rss)) => {
                        let mib = (1 << 20) as f64;
                        let bound = plan.ahead_capacity as f64 * ours::BLOB100_SIZE as f64 + mib;
                        figures.add("producer_ahead.ours.heap_peak", "MiB", heap / mib);
                        figures.add("producer_ahead.ours.heap_peak/bound", "x (capacity × item + 1 MiB)", heap / bound);
                        figures.add("producer_ahead.ours.rss_growth", "MiB", rss / mib);
                    }
                    Err(e) => eprintln!("ours: producer-ahead run failed: {e}"),
                }
            }
        }

        // Allocations: per buffered read (consumer thread), per call and per
        // streamed item (both sides, all threads).
        if group("allocs") {
            if let Some(o) = &ours_default {
                match o.allocs_per_buffered_read(plan.alloc_items).await {
                    Ok((per_read, _reads)) => figures.add("allocs.ours.per_buffered_read", "allocs/read", per_read),
                    Err(e) => eprintln!("ours: buffered-read run failed: {e}"),
                }
            }
            for c in &live {
                if let Some(run) = c.unary(plan.alloc_calls) {
                    let counting = alloc::Counting::start();
                    if run.await.is_ok() {
                        figures.add(
                            &format!("allocs.{}.per_call", c.name()),
                            "allocs/call",
                            counting.allocs() as f64 / plan.alloc_calls as f64,
                        );
                    }
                }
                if let Some(run) = c.stream(plan.alloc_items) {
                    let counting = alloc::Counting::start();
                    if run.await.is_ok() {
                        figures.add(
                            &format!("allocs.{}.per_stream_item", c.name()),
                            "allocs/item",
                            counting.allocs() as f64 / plan.alloc_items as f64,
                        );
                    }
                }
            }
        }
        let floor = raw_rtt.map(|us| format!(" (raw echo RTT {us:.1} µs)")).unwrap_or_default();
        println!("round {}/{} done in {:.1} s{floor}", round + 1, plan.rounds, t0.elapsed().as_secs_f64());
    }

    // Seed 003: game events by polling, push callbacks, and Sequence.
    if group("game") {
        let ticks = plan.game_ticks;
        for _ in 0..plan.game_runs {
            for design in game::Design::ALL {
                match tokio::task::spawn_blocking(move || game::run(design, ticks)).await {
                    Ok(Ok(g)) => {
                        let k = design.key();
                        figures.add(&format!("game.{k}.latency"), "RTTs/event", g.latency_rtts);
                        figures.add(&format!("game.{k}.server_writes"), "writes/event", g.server_writes);
                        figures.add(&format!("game.{k}.all_writes"), "writes/event", g.all_writes);
                        figures.add(&format!("game.{k}.allocs"), "allocs/event", g.allocs);
                    }
                    Ok(Err(e)) => eprintln!("game ({}) failed: {e}", design.name()),
                    Err(e) => eprintln!("game ({}) panicked: {e}", design.name()),
                }
            }
        }
    }
    figures
}

fn print_table(figures: &Figures) {
    // Sections in order of appearance; within one, contenders in table order.
    // The instruction counts have a table of their own (costs::table).
    let shown = || figures.iter().filter(|f| !f.name.starts_with("instructions."));
    let mut sections: Vec<&str> = Vec::new();
    for f in shown() {
        let section = f.name.split('.').next().unwrap_or("");
        if !sections.contains(&section) {
            sections.push(section);
        }
    }
    let contender_rank = |name: &str| {
        let who = name.split('.').nth(1).unwrap_or("");
        CONTENDERS.iter().position(|c| *c == who).unwrap_or(CONTENDERS.len())
    };
    let mut rows: Vec<&stats::Figure> = shown().collect();
    rows.sort_by_key(|f| {
        let section = f.name.split('.').next().unwrap_or("");
        (sections.iter().position(|s| *s == section), contender_rank(&f.name))
    });
    println!();
    println!("{:<46} {:>10} {:>22}  unit", "figure", "median", "min – max");
    let mut section = "";
    for f in rows {
        let this = f.name.split('.').next().unwrap_or("");
        if this != section {
            section = this;
            println!("{}", "-".repeat(104));
        }
        println!(
            "{:<46} {:>10} {:>22}  {}",
            f.name,
            fmt(f.median()),
            format!("{} – {}", fmt(f.min()), fmt(f.max())),
            f.unit
        );
    }
    println!("{}", "-".repeat(104));
    for (name, why) in &figures.skipped {
        println!("{name}: {why}");
    }
    println!(
        "game: one-way delay {:?} (RTT {:?}), bursts of {} events every {:?}, paused tokio clock",
        game::ONE_WAY,
        game::RTT,
        game::BURST,
        game::TICK
    );
}

/// The issue's targets, as ratios in this run, each met or not.
fn print_targets(figures: &Figures) {
    println!("\ntargets (issues 6 and 12), ratios from the same run:");
    let m = |name: &str| figures.median_of(name);
    let line = |what: &str, value: Option<f64>, unit: &str, ok: Option<bool>| {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        let value = value.map(|v| format!("{} {unit}", fmt(v))).unwrap_or_else(|| "-".into());
        println!("  {what:<58} {value:>22}  {verdict}");
    };
    let unary = m("unary.ours.rtt/raw");
    line("unary round trip ≤ 1.1× raw echo", unary, "x", unary.map(|r| r <= 1.1));
    let ours = m("unary.ours.rtt");
    let peers = ["tarpc", "tonic", "remoc", "capnp-rpc"];
    let fastest_peer = peers
        .iter()
        .filter_map(|p| m(&format!("unary.{p}.rtt")))
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x))));
    line(
        "unary round trip ahead of every peer (ours / fastest peer)",
        ours.zip(fastest_peer).map(|(o, p)| o / p),
        "x",
        ours.zip(fastest_peer).map(|(o, p)| o < p),
    );
    let inflight = m("inflight64.ours.rate/raw");
    line("64 in flight ≥ 0.5× raw pipelined echo", inflight, "x", inflight.map(|r| r >= 0.5));
    let chain = m("chain10.ours.pipelined/rtt");
    line("pipelined chain of 10 ≤ 1.5 raw RTTs", chain, "RTTs", chain.map(|r| r <= 1.5));
    let seq = m("stream.ours.rate/raw");
    line("Sequence ≥ 0.5× raw postcard stream", seq, "x", seq.map(|r| r >= 0.5));
    let tonic = m("stream.tonic.rate/raw");
    line(
        "Sequence ≥ 1.5× tonic streaming (ours / tonic)",
        seq.zip(tonic).map(|(o, t)| o / t),
        "x",
        seq.zip(tonic).map(|(o, t)| o >= 1.5 * t),
    );
    let bulk = m("bulk.ours.rate/raw");
    line("Bytes ≥ 0.8× raw TCP bulk", bulk, "x", bulk.map(|r| r >= 0.8));
    let mem = m("producer_ahead.ours.heap_peak/bound");
    line("producer-ahead memory ≤ capacity × item size + 1 MiB", mem, "x bound", mem.map(|r| r <= 1.0));
    let reads = m("allocs.ours.per_buffered_read");
    line("zero allocations per buffered read", reads, "allocs", reads.map(|r| r == 0.0));
    let calls = m("allocs.ours.per_call");
    line("≤ 14 allocations per call", calls, "allocs", calls.map(|r| r <= 14.0));
}
