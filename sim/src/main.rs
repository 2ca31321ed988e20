//! `ringmq-sim`: runs ringmq's shard cores and many clients in one thread from a seed, with
//! faults, and checks the broker's promises after every step (see `README.md` of the crate's
//! directory and `docs/simulator.md`).

mod client;
mod oracle;
mod rng;
mod trace;
mod world;

use std::process::ExitCode;

use clap::Parser;

use world::{Setup, World};

/// Deterministic simulation of ringmq shards and clients, with faults.
#[derive(Debug, Parser)]
#[command(name = "ringmq-sim", version)]
struct Args {
    /// Seed of every choice the run makes (the same seed replays the same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run this many seeds, from --seed on (a campaign); stops at the first violation.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Steps per run before the quiet phase (in which every session drains).
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Shard cores.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    shards: u16,
    /// Simulated clients.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// Run without injected faults (no mesh delays, clock jumps, drops, stuck readers).
    #[arg(long)]
    no_faults: bool,
    /// Print every event of the trace.
    #[arg(long)]
    verbose: bool,
    /// `sync`: shards log and acknowledge after their logs, and (with faults) the broker
    /// crashes now and then and restarts from its logs; `memory`: neither; `mixed`: odd seeds
    /// `sync`, even seeds `memory`.
    #[arg(long, value_enum, default_value_t = Durability::Mixed)]
    durability: Durability,
}

/// The durability a run simulates.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Durability {
    Memory,
    Sync,
    Mixed,
}

/// How one seed's run ended.
struct Outcome {
    trace: u64,
    events: u64,
    world_summary: String,
    failure: Option<(u64, Vec<String>, Vec<String>)>,
}

fn run(setup: Setup, verbose: bool) -> Outcome {
    let mut world = World::new(setup.clone());
    world.trace.echo = verbose;
    let mut failed_at = None;
    for _ in 0..setup.steps {
        world.step();
        if !world.oracle.violations.is_empty() {
            failed_at = Some(world.step);
            break;
        }
    }
    if failed_at.is_none() {
        world.quiesce();
        if !world.oracle.violations.is_empty() {
            failed_at = Some(world.step);
        }
    }
    let c = &world.counts;
    let summary = format!(
        "seed {} steps {} shards {} clients {}: {} connects, {} takeovers, {} drops, {} publishes \
         ({} acknowledged, {} tracked), {} receipts, {} clock jumps, {} mesh delays, {} restarts, {} ms simulated",
        setup.seed,
        setup.steps,
        setup.shards,
        setup.clients,
        c.connects,
        c.takeovers,
        c.drops,
        c.publishes,
        world.oracle.acked,
        world.oracle.published_count(),
        world.oracle.receipts,
        c.clock_jumps,
        c.mesh_delays,
        c.restarts,
        world.elapsed_ms(),
    );
    let failure = failed_at.map(|step| {
        let violations = world
            .oracle
            .violations
            .iter()
            .take(10)
            .map(|v| format!("{}: {}", v.promise, v.detail))
            .collect();
        (step, violations, world.trace.recent().cloned().collect())
    });
    Outcome {
        trace: world.trace.hash(),
        events: world.trace.len(),
        world_summary: summary,
        failure,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut combined: u64 = 0xcbf2_9ce4_8422_2325;
    let mut events = 0;
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let setup = Setup {
            seed,
            steps: args.steps,
            shards: usize::from(args.shards),
            clients: args.clients as usize,
            faults: !args.no_faults,
            durable: match args.durability {
                Durability::Memory => false,
                Durability::Sync => true,
                Durability::Mixed => seed % 2 == 1,
            },
        };
        let outcome = run(setup, args.verbose);
        println!("{}", outcome.world_summary);
        events += outcome.events;
        for byte in outcome.trace.to_le_bytes() {
            combined ^= u64::from(byte);
            combined = combined.wrapping_mul(0x0100_0000_01b3);
        }
        if let Some((step, violations, recent)) = outcome.failure {
            println!("VIOLATION in seed {seed} at step {step}:");
            for v in &violations {
                println!("  {v}");
            }
            println!("the last events before it:");
            for line in &recent {
                println!("  {line}");
            }
            println!(
                "reproduce: cargo run --release -p ringmq-sim -- --seed {seed} --steps {} --shards {} --clients {}{} --durability {} --verbose",
                args.steps.min(step),
                args.shards,
                args.clients,
                if args.no_faults { " --no-faults" } else { "" },
                format!("{:?}", args.durability).to_lowercase()
            );
            println!("trace {:016x}", outcome.trace);
            return ExitCode::from(1);
        }
    }
    println!("{events} events, no promise broken");
    println!("trace {combined:016x}");
    ExitCode::SUCCESS
}
