//! Instruction counts per operation (issue 12) in the benchmark's report:
//! `scripts/costs.sh --peers --json FILE` counts, under callgrind, one unary
//! call, one call of 64 in flight, one small stream item and one KiB of
//! `Bytes` for ours and the raw floor, and tonic's stream item; the figures
//! go into the results JSON as `instructions.<side>.<workload>` and into a
//! table of their own after the timings.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::stats::Figures;

/// One figure of `scripts/costs.sh`: instructions per operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Count {
    pub workload: String,
    pub side: String,
    pub instructions: u64,
}

/// What the counting step gave.
pub enum Outcome {
    Counted(Vec<Count>),
    /// Not counted, and why ("not run (--no-costs)", "skipped: ...").
    Skipped(String),
}

/// Table rows, in the script's order.
const WORKLOADS: [(&str, &str); 4] =
    [("unary", "call"), ("inflight64", "call"), ("sequence", "item"), ("bytes", "KiB")];

/// Runs `scripts/costs.sh --peers` (a few minutes under valgrind).
pub fn measure() -> Outcome {
    let valgrind = Command::new("valgrind").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !valgrind.is_ok_and(|status| status.success()) {
        return Outcome::Skipped("skipped: valgrind is not installed (apt-get install valgrind)".into());
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let json = std::env::temp_dir().join(format!("rpc-benches-costs-{}.json", std::process::id()));
    println!("instruction counts: running scripts/costs.sh --peers (a few minutes under valgrind)");
    // The script's own table goes unshown (the report prints one); its
    // errors and build output go to stderr.
    let status = Command::new("bash")
        .arg(repo.join("scripts/costs.sh"))
        .arg("--peers")
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .status();
    let read = std::fs::read_to_string(&json);
    let _ = std::fs::remove_file(&json);
    match (status, read) {
        (Ok(status), Ok(text)) if status.success() => match parse(&text) {
            Some(counts) if !counts.is_empty() => Outcome::Counted(counts),
            _ => Outcome::Skipped("skipped: scripts/costs.sh wrote no figures".into()),
        },
        (Ok(status), _) => Outcome::Skipped(format!("skipped: scripts/costs.sh failed ({status})")),
        (Err(e), _) => Outcome::Skipped(format!("skipped: cannot run scripts/costs.sh: {e}")),
    }
}

/// The script's JSON: one `"workload.side": instructions` per line.
pub fn parse(json: &str) -> Option<Vec<Count>> {
    let mut counts = Vec::new();
    for line in json.lines().map(str::trim).filter(|l| l.starts_with('"')) {
        let (key, value) = line.trim_end_matches(',').split_once(':')?;
        let (workload, side) = key.trim().trim_matches('"').split_once('.')?;
        let instructions = value.trim().parse().ok()?;
        counts.push(Count { workload: workload.into(), side: side.into(), instructions });
    }
    Some(counts)
}

fn unit(workload: &str) -> &'static str {
    match workload {
        "unary" | "inflight64" => "instructions/call",
        "sequence" => "instructions/item",
        "bytes" => "instructions/KiB",
        _ => "instructions",
    }
}

/// Adds the counts to the figures, and so to the results JSON (the report's
/// [`table`] says why when there are none).
pub fn add_to(figures: &mut Figures, outcome: &Outcome) {
    if let Outcome::Counted(counts) = outcome {
        for c in counts {
            figures.add(&format!("instructions.{}.{}", c.side, c.workload), unit(&c.workload), c.instructions as f64);
        }
    }
}

/// The report's table: a row per workload, ours beside raw and tonic (`-`
/// where a side was not counted).
pub fn table(outcome: &Outcome) -> String {
    let counts = match outcome {
        Outcome::Counted(counts) => counts,
        Outcome::Skipped(why) => return format!("instruction counts: {why}\n"),
    };
    let get = |workload: &str, side: &str| {
        counts.iter().find(|c| c.workload == workload && c.side == side).map(|c| c.instructions)
    };
    let cell = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.2}x", a as f64 / b as f64),
        _ => "-".into(),
    };
    let mut out = String::from("instruction counts per operation (callgrind, user space; scripts/costs.sh --peers):\n");
    let row = |cells: [&str; 7]| {
        let [w, o, r, or, t, ot, u] = cells;
        format!("  {w:<12} {o:>10} {r:>10} {or:>9} {t:>10} {ot:>10}  {u}\n")
    };
    out.push_str(&row(["workload", "ours", "raw", "ours/raw", "tonic", "ours/tonic", "instructions per"]));
    for (workload, per) in WORKLOADS {
        let (ours, raw, tonic) = (get(workload, "ours"), get(workload, "raw"), get(workload, "tonic"));
        if ours.is_none() && raw.is_none() && tonic.is_none() {
            continue;
        }
        let cells = [cell(ours), cell(raw), ratio(ours, raw), cell(tonic), ratio(ours, tonic)];
        let [o, r, or, t, ot] = cells.each_ref().map(String::as_str);
        out.push_str(&row([workload, o, r, or, t, ot, per]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT_JSON: &str = "{\n  \"unary.ours\": 44111,\n  \"unary.raw\": 4463,\n  \"sequence.ours\": 1600,\n  \
        \"sequence.raw\": 677,\n  \"sequence.tonic\": 1634\n}\n";

    #[test]
    fn parses_the_scripts_json() {
        let counts = parse(SCRIPT_JSON).unwrap();
        assert_eq!(counts.len(), 5);
        assert_eq!(counts[4], Count { workload: "sequence".into(), side: "tonic".into(), instructions: 1634 });
        assert!(parse("{\n  \"unary.ours\": lots\n}").is_none());
        assert!(parse("{\n  \"unary\": 12\n}").is_none());
    }

    #[test]
    fn table_puts_tonic_beside_ours_and_dashes_where_not_counted() {
        let table = table(&Outcome::Counted(parse(SCRIPT_JSON).unwrap()));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let words = |line: &str| line.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(words(lines[2]), ["unary", "44111", "4463", "9.88x", "-", "-", "call"]);
        assert_eq!(words(lines[3]), ["sequence", "1600", "677", "2.36x", "1634", "0.98x", "item"]);
        let skipped = super::table(&Outcome::Skipped("skipped: valgrind is not installed".into()));
        assert_eq!(skipped, "instruction counts: skipped: valgrind is not installed\n");
    }

    #[test]
    fn counts_go_into_the_results_json() {
        let mut figures = Figures::default();
        add_to(&mut figures, &Outcome::Counted(parse(SCRIPT_JSON).unwrap()));
        assert_eq!(figures.median_of("instructions.tonic.sequence"), Some(1634.0));
        assert_eq!(figures.get("instructions.ours.unary").unwrap().unit, "instructions/call");
        assert!(figures.to_json().contains("\"instructions.raw.sequence\": {\"median\": 677, \"min\": 677"));
        let mut skipped = Figures::default();
        add_to(&mut skipped, &Outcome::Skipped("no valgrind".into()));
        assert_eq!(skipped.iter().count(), 0);
    }
}
