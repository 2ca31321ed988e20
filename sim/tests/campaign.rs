//! The simulator as CI runs it: a bounded batch of seeds, and its determinism.

use std::process::Command;

fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-sim"))
        .args(args)
        .output()
        .expect("ringmq-sim runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

fn trace_line(text: &str) -> String {
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("trace "), "last line is the trace: {text}");
    last.to_owned()
}

/// One shard, faults on: every promise holds over a batch of seeds.
#[test]
fn one_shard_keeps_every_promise() {
    let (ok, text) = sim(&[
        "--seed", "1", "--seeds", "12", "--steps", "1500", "--shards", "1",
    ]);
    assert!(ok, "{text}");
}

/// Two and three shards, faults on: sessions move between shards (a client reconnecting
/// elsewhere), and nothing routed to them meanwhile is lost.
#[test]
fn several_shards_keep_every_promise() {
    for shards in ["2", "3"] {
        let (ok, text) = sim(&[
            "--seed", "1", "--seeds", "12", "--steps", "1500", "--shards", shards,
        ]);
        assert!(ok, "{text}");
    }
}

/// The same seed gives the same trace; another seed another one.
#[test]
fn a_seed_replays_exactly() {
    let args = |seed: &'static str| ["--seed", seed, "--steps", "800", "--shards", "1"];
    let (_, a) = sim(&args("7"));
    let (_, b) = sim(&args("7"));
    let (_, c) = sim(&args("8"));
    assert_eq!(trace_line(&a), trace_line(&b));
    assert_ne!(trace_line(&a), trace_line(&c));
}

/// A broken promise exits non-zero and says how to reproduce it.
#[test]
fn help_and_bad_arguments() {
    let (ok, text) = sim(&["--help"]);
    assert!(ok && text.contains("--seed"), "{text}");
    let (ok, _) = sim(&["--shards", "0"]);
    assert!(!ok);
}
