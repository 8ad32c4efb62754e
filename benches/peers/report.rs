//! What a run prints: the settings, one line per run, the table of
//! medians, the paired ratios, and a plot.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::load::Run;
use crate::rows::{Row, PAIRS};
use crate::{unexpected, Args, Target};

pub(crate) fn header(args: &Args, skipped: &[String]) {
    let version = |program: &str, flag: &str| {
        Command::new(program)
            .arg(flag)
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("?")
                    .to_string()
            })
            .unwrap_or_else(|_| "not installed".into())
    };
    let git = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("Portcullis peers benchmark, git {git}");
    println!("nginx: {}", version("nginx", "-v"));
    println!("haproxy: {}", version("haproxy", "-v"));
    println!("caddy: {}", version("caddy", "version"));
    println!("wrk: {}", version("wrk", "-v"));
    if args.instructions {
        println!(
            "servers under callgrind, per row {} warm-up then {} counted requests on one connection",
            (args.requests / 10).max(1),
            args.requests
        );
    } else {
        println!(
            "{} connections, {} s runs after {} s warm-up, {} rounds; servers on CPU {}, wrk on CPU {}",
            args.connections, args.duration, args.warmup, args.rounds, args.server_cpu, args.wrk_cpu
        );
    }
    for s in skipped {
        println!("skipped {s}");
    }
    println!();
}

pub(crate) fn progress(round: usize, rounds: usize, row: &Row, run: &Run) {
    println!(
        "  round {}/{rounds}  {:<30} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  {} unexpected",
        round + 1,
        row.name,
        run.rps,
        run.p50_ms,
        run.p99_ms,
        unexpected(row, run)
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct Summary {
    rps: f64,
    p50: f64,
    p99: f64,
    spread: f64,
    unexpected: u64,
}

fn summarize(row: &Row, runs: &[Run]) -> Summary {
    let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
    let (lo, hi) = rps
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let rps_median = median(rps);
    Summary {
        rps: rps_median,
        p50: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99: median(runs.iter().map(|r| r.p99_ms).collect()),
        spread: if rps_median > 0.0 {
            (hi - lo) / rps_median
        } else {
            0.0
        },
        unexpected: runs.iter().map(|r| unexpected(row, r)).sum(),
    }
}

/// The table of medians over the rounds, then the paired ratios: each
/// round's ratio of a row to its baseline (the two ran seconds apart, so
/// the machine's drift mostly cancels), median and range over rounds.
pub(crate) fn throughput(targets: &[Target], runs: &[Vec<Run>]) {
    let sums: Vec<Summary> = targets
        .iter()
        .zip(runs)
        .map(|(t, r)| summarize(t.row, r))
        .collect();
    let nginx = targets.iter().position(|t| t.row.name == "nginx");
    println!();
    println!(
        "{:<30} {:>9} {:>8} {:>8} {:>7} {:>7} {:>10} {:>10}",
        "row", "req/s", "p50 ms", "p99 ms", "spread", "/nginx", "p99-nginx", "unexpected"
    );
    for (t, s) in targets.iter().zip(&sums) {
        let (vs, dp99) = nginx.map_or(("-".into(), "-".into()), |n| {
            (
                format!("{:.2}", s.rps / sums[n].rps),
                format!("{:+.3}", s.p99 - sums[n].p99),
            )
        });
        println!(
            "{:<30} {:>9.0} {:>8.3} {:>8.3} {:>6.1}% {:>7} {:>10} {:>10}",
            t.row.name,
            s.rps,
            s.p50,
            s.p99,
            s.spread * 100.0,
            vs,
            dp99,
            s.unexpected
        );
    }
    println!("\npaired ratios (req/s of the row ÷ its baseline's, per round):");
    for (a, b) in pairs(targets) {
        let mut ratios: Vec<f64> = runs[a]
            .iter()
            .zip(&runs[b])
            .filter(|(_, base)| base.rps > 0.0)
            .map(|(row, base)| row.rps / base.rps)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let (lo, hi) = (ratios.first().copied(), ratios.last().copied());
        let p99 = sums[a].p99 - sums[b].p99;
        println!(
            "  {:<30} / {:<24} {:.3} (rounds {:.3}..{:.3}), p99 {p99:+.3} ms",
            targets[a].row.name,
            targets[b].row.name,
            median(ratios),
            lo.unwrap_or(f64::NAN),
            hi.unwrap_or(f64::NAN),
        );
    }
}

/// The pairs of [`PAIRS`] whose both rows ran, as indexes.
fn pairs(targets: &[Target]) -> Vec<(usize, usize)> {
    let index = |name: &str| targets.iter().position(|t| t.row.name == name);
    PAIRS
        .iter()
        .filter_map(|(a, b)| Some((index(a)?, index(b)?)))
        .collect()
}

pub(crate) fn instructions(targets: &[Target], counts: &[Option<u64>]) {
    println!("{:<30} {:>14}", "row", "instr/request");
    for (t, c) in targets.iter().zip(counts) {
        let shown = c.map_or("-".to_string(), |c| c.to_string());
        println!("{:<30} {shown:>14}", t.row.name);
    }
    println!(
        "\npaired (baseline's instructions ÷ the row's; the throughput ratio is closer to 1):"
    );
    for (a, b) in pairs(targets) {
        if let (Some(row), Some(base)) = (counts[a], counts[b]) {
            println!(
                "  {:<30} / {:<24} {:.3} ({:+} per request)",
                targets[a].row.name,
                targets[b].row.name,
                base as f64 / row as f64,
                row as i64 - base as i64
            );
        }
    }
}

/// Each Portcullis row's instructions by stage (from the dumps that
/// `--instructions` kept in `dir`).
pub(crate) fn stages(targets: &[Target], dir: &Path, requests: usize) {
    println!("\nper stage (callgrind, inclusive instructions per request; indented: inside the hook above):");
    for t in targets
        .iter()
        .filter(|t| t.row.name.starts_with("portcullis"))
    {
        let dump = dir.join(format!("{}.callgrind", t.row.name.replace(' ', "_")));
        let stages = crate::count::stages(&dump, requests);
        if stages.is_empty() {
            continue;
        }
        println!("  {}", t.row.name);
        for (label, nested, n) in stages {
            let indent = if nested { "      " } else { "    " };
            println!("{indent}{label:<28} {n:>8}");
        }
    }
}

/// Throughput and p99 per row as a PNG, through gnuplot when installed.
pub(crate) fn plot(targets: &[Target], runs: &[Vec<Run>], out: &Path) {
    let mut data = String::new();
    for (t, r) in targets.iter().zip(runs) {
        let s = summarize(t.row, r);
        let _ = writeln!(data, "\"{}\" {:.0} {:.3}", t.row.name, s.rps, s.p99);
    }
    let Some(dir) = out.parent() else { return };
    let data_file = out.with_extension("dat");
    if std::fs::create_dir_all(dir).is_err() || std::fs::write(&data_file, data).is_err() {
        println!("plot: cannot write {}", data_file.display());
        return;
    }
    let script = format!(
        "set terminal pngcairo size 1400,1000 font ',10'\nset output '{}'\n\
         set style data histograms\nset style fill solid 0.8\nset boxwidth 0.8\n\
         set xtics rotate by -40 left nomirror\nset grid ytics\nunset key\n\
         set multiplot layout 2,1\n\
         set title 'requests per second (median over rounds, higher is better)'\n\
         plot '{d}' using 2:xtic(1) linecolor rgb '#2b6cb0'\n\
         set title 'p99 latency, ms (median over rounds, lower is better)'\n\
         plot '{d}' using 3:xtic(1) linecolor rgb '#c05621'\nunset multiplot\n",
        out.display(),
        d = data_file.display()
    );
    let script_file = out.with_extension("gnuplot");
    if std::fs::write(&script_file, script).is_err() {
        println!("plot: cannot write {}", script_file.display());
        return;
    }
    match Command::new("gnuplot").arg(&script_file).status() {
        Ok(s) if s.success() => println!("\nplot: {}", out.display()),
        _ => println!("\nplot: skipped (gnuplot not installed: apt-get install gnuplot-nox)"),
    }
}
