//! The epoll fallback, forced with `RINGMQ_DRIVER=legacy`.
//!
//! The real test runs in a child process (this test binary re-run with the variable set), so
//! no test ever mutates the environment of a process whose other threads read it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use ringmq_io::{adopt_stream, bind_tcp, DriverKind, Mesh};

const INNER_TEST: &str = "legacy_driver_inner";

#[test]
fn legacy_driver_via_environment() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            INNER_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RINGMQ_DRIVER", "legacy")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("legacy driver ok"),
        "inner test did not run:\n{stdout}"
    );
}

#[test]
fn unknown_driver_name_is_a_config_error() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["bad_driver_inner", "--exact", "--ignored", "--nocapture"])
        .env("RINGMQ_DRIVER", "kqueue")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
#[ignore = "runs in a child process started by unknown_driver_name_is_a_config_error"]
fn bad_driver_inner() {
    if std::env::var("RINGMQ_DRIVER").as_deref() != Ok("kqueue") {
        return;
    }
    let result = ringmq_io::spawn_shards(&common::config(1), |_| async {});
    assert!(matches!(result, Err(ringmq_io::IoError::Config(_))));
}

#[test]
#[ignore = "runs in a child process started by legacy_driver_via_environment"]
fn legacy_driver_inner() {
    if std::env::var("RINGMQ_DRIVER").as_deref() != Ok("legacy") {
        println!("skipped: RINGMQ_DRIVER is not legacy");
        return;
    }
    // Mesh exchange with cross-thread wakes on epoll.
    let mesh = Mesh::<u64>::new(2, 256);
    let received = common::run_on_shards(2, move |context| {
        let mesh = Arc::clone(&mesh);
        async move {
            assert_eq!(context.driver, DriverKind::Legacy);
            let peer = 1 - context.shard_id;
            common::exchange(mesh.endpoint(context.shard_id), peer, 200_000, 64, true).await
        }
    });
    assert_eq!(received, vec![200_000, 200_000]);

    // A listener on a shard, and a std stream adopted on epoll (it must become non-blocking).
    let port = Arc::new(AtomicU16::new(0));
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let mut adopted_client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let server_side = Arc::new(Mutex::new(Some(listener.accept().unwrap().0)));
    let shard = {
        let port = port.clone();
        std::thread::spawn(move || {
            common::run_on_shards(1, move |context| {
                let port = port.clone();
                let adopted = server_side.lock().unwrap().take().unwrap();
                async move {
                    assert_eq!(context.driver, DriverKind::Legacy);
                    let listener =
                        bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)), false, 16).unwrap();
                    port.store(listener.local_addr().unwrap().port(), Ordering::SeqCst);
                    let (accepted, _) = listener.accept().await.unwrap();
                    echo(accepted).await;
                    echo(adopt_stream(adopted).unwrap()).await;
                    monoio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
    };
    while port.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut accepted_client = TcpStream::connect(SocketAddr::from((
        [127, 0, 0, 1],
        port.load(Ordering::SeqCst),
    )))
    .unwrap();
    for client in [&mut accepted_client, &mut adopted_client] {
        client.write_all(b"epoll").unwrap();
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"epoll");
    }
    shard.join().unwrap();
    println!("legacy driver ok");
}

async fn echo(mut stream: monoio::net::TcpStream) {
    let (result, buffer) = stream.read_exact(vec![0u8; 5]).await;
    result.unwrap();
    let (result, _) = stream.write_all(buffer).await;
    result.unwrap();
}
