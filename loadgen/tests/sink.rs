//! End to end against the bundled null sink: `pub` for one second at QoS 1 must see every
//! publish acknowledged and exit 0, and the JSON report must be machine-readable.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

#[test]
fn pub_against_the_sink_acks_everything() {
    let binary = env!("CARGO_BIN_EXE_ringmq-loadgen");
    let port = free_port().to_string();
    let mut sink = Command::new(binary)
        .args(["sink", "-p", &port, "-d", "20", "--quiet"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sink");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
        assert!(Instant::now() < deadline, "sink did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = Command::new(binary)
        .args([
            "pub", "-p", &port, "-c", "4", "-q", "1", "-d", "1", "--json", "--quiet",
        ])
        .output()
        .expect("run pub");
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(output.status.success(), "pub failed: {output:?}");
    let report = String::from_utf8(output.stdout).expect("utf-8 report");
    let field = |name: &str| -> f64 {
        let start = report.find(&format!("\"{name}\":")).expect(name) + name.len() + 3;
        let rest = &report[start..];
        let end = rest.find([',', '}']).expect("number end");
        rest[..end].parse().expect("number")
    };
    assert!(field("sent_total") > 1000.0, "{report}");
    assert_eq!(field("sent_total"), field("acked_total"), "{report}");
    assert_eq!(field("errors"), 0.0, "{report}");
    assert_eq!(field("exit_code"), 0.0, "{report}");
}
