fn main() { eprintln!("ringmq-loadgen: not built yet (issue 3)"); std::process::exit(2); }
