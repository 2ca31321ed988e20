//! The `ringmq` binary: parses the command line and runs the broker or a client command.

use anyhow::Context;
use clap::Parser;
use ringmq::cli::{Cli, Command};
use ringmq::config::{embedded_profiles, Config};

// `--features system-alloc` builds with the C library's malloc instead, for heap profilers
// (heaptrack, valgrind) that see only malloc.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(&args.overrides()).context("invalid configuration")?;
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
            ringmq::broker::run(config).context("broker failed")?;
        }
        Command::Config(args) => {
            let config = Config::load(&args.overrides()).context("invalid configuration")?;
            print!("{}", config.to_toml());
        }
        Command::Profiles => {
            for (name, _) in embedded_profiles() {
                println!("{name}");
            }
        }
        Command::Client(command) => {
            // Client commands have their own exit codes (1 server error, 2 usage, 3 transport),
            // which anyhow's single failure code cannot express.
            if let Err(error) = ringmq::client::run(&command) {
                eprintln!("error: {error}");
                std::process::exit(error.exit_code());
            }
        }
    }
    Ok(())
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log that cannot be written (stderr a closed pipe) is dropped: by default the subscriber
    // reports the failure with `eprintln!`, which panics on the same closed pipe and took the
    // shard threads down with it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    if json {
        builder.json().with_ansi(false).init();
    } else {
        // Colour only on a terminal: a file or a pipe gets plain text.
        use std::io::IsTerminal;
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
