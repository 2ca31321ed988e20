//! Listeners on shards: SO_REUSEPORT balancing, stopping by drop, moving streams between threads.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use ringmq_io::{adopt_stream, bind_tcp, detach_stream, tune_accepted, CrossNotify, Mesh};

const CLIENT_COUNT: usize = 64;

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits on the std side until `counter` reaches `target`.
fn wait_until(counter: &AtomicUsize, target: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counter.load(Ordering::SeqCst) < target {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn two_shards_share_a_port_and_both_accept_then_stop_on_drop() {
    let port = Arc::new(AtomicU16::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let stops: Arc<Vec<CrossNotify>> = Arc::new((0..2).map(|_| CrossNotify::new()).collect());
    let shards = {
        let (port, ready, stopped, stops) =
            (port.clone(), ready.clone(), stopped.clone(), stops.clone());
        std::thread::spawn(move || {
            common::run_on_shards(2, move |context| {
                let (port, ready, stopped, stops) =
                    (port.clone(), ready.clone(), stopped.clone(), stops.clone());
                async move {
                    // Shard 0 lets the kernel pick the port; shard 1 joins it.
                    let listener = if context.shard_id == 0 {
                        let listener = bind_tcp(localhost(0), true, 128).unwrap();
                        port.store(listener.local_addr().unwrap().port(), Ordering::SeqCst);
                        listener
                    } else {
                        while port.load(Ordering::SeqCst) == 0 {
                            monoio::time::sleep(Duration::from_millis(1)).await;
                        }
                        bind_tcp(localhost(port.load(Ordering::SeqCst)), true, 128).unwrap()
                    };
                    ready.fetch_add(1, Ordering::SeqCst);
                    let mut accepted = 0;
                    loop {
                        monoio::select! {
                            result = listener.accept() => {
                                let (mut stream, _) = result.unwrap();
                                tune_accepted(&stream).unwrap();
                                assert!(stream.nodelay().unwrap());
                                let (result, _) = stream.write_all(vec![context.shard_id as u8]).await;
                                result.unwrap();
                                accepted += 1;
                            }
                            _ = stops[context.shard_id].notified() => break,
                        }
                    }
                    // Dropping the listener (its accept was cancelled by select) closes it.
                    drop(listener);
                    monoio::time::sleep(Duration::from_millis(20)).await;
                    stopped.fetch_add(1, Ordering::SeqCst);
                    accepted
                }
            })
        })
    };
    wait_until(&ready, 2);
    let address = localhost(port.load(Ordering::SeqCst));
    let mut per_shard = [0usize; 2];
    for _ in 0..CLIENT_COUNT {
        let mut client = TcpStream::connect(address).unwrap();
        let mut shard = [0u8];
        client.read_exact(&mut shard).unwrap();
        per_shard[shard[0] as usize] += 1;
    }
    for stop in stops.iter() {
        stop.notify();
    }
    wait_until(&stopped, 2);
    let accepted = shards.join().unwrap();
    assert_eq!(accepted, per_shard.to_vec());
    assert!(
        per_shard.iter().all(|&count| count > 0),
        "reuse_port did not balance: {per_shard:?}"
    );
    let refused = TcpStream::connect(address).expect_err("listener still accepting after drop");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn binding_a_taken_port_without_reuse_port_fails_with_the_address() {
    let taken = std::net::TcpListener::bind(localhost(0)).unwrap();
    let address = taken.local_addr().unwrap();
    let outputs = common::run_on_shards(1, move |_| async move {
        match bind_tcp(address, false, 16) {
            Err(ringmq_io::IoError::Bind { addr, .. }) => addr == address,
            _ => false,
        }
    });
    assert_eq!(outputs, vec![true]);
}

#[test]
fn adopt_stream_takes_a_std_stream_from_another_thread() {
    let listener = std::net::TcpListener::bind(localhost(0)).unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let server_side = Arc::new(Mutex::new(Some(server_side)));
    let shard = std::thread::spawn(move || {
        common::run_on_shards(1, move |_| {
            let stream = server_side.lock().unwrap().take().unwrap();
            async move { echo_once(adopt_stream(stream).unwrap(), 5).await }
        })
    });
    client.write_all(b"hello").unwrap();
    let mut reply = [0u8; 5];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello");
    assert_eq!(shard.join().unwrap(), vec![true]);
}

#[test]
fn a_stream_accepted_on_one_shard_is_served_by_another() {
    let port = Arc::new(AtomicU16::new(0));
    let mesh = Mesh::<std::net::TcpStream>::new(2, 4);
    let shards = {
        let port = port.clone();
        std::thread::spawn(move || {
            common::run_on_shards(2, move |context| {
                let port = port.clone();
                let endpoint = mesh.endpoint(context.shard_id);
                async move {
                    if context.shard_id == 0 {
                        let listener = bind_tcp(localhost(0), false, 16).unwrap();
                        port.store(listener.local_addr().unwrap().port(), Ordering::SeqCst);
                        let (stream, _) = listener.accept().await.unwrap();
                        endpoint.try_send(1, detach_stream(stream)).unwrap();
                        endpoint.wake(1);
                        true
                    } else {
                        let mut inbound = Vec::new();
                        while inbound.is_empty() {
                            endpoint.recv_batch(&mut inbound, 1).await;
                        }
                        let (from, stream) = inbound.pop().unwrap();
                        assert_eq!(from, 0);
                        echo_once(adopt_stream(stream).unwrap(), 4).await
                    }
                }
            })
        })
    };
    while port.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut client = TcpStream::connect(localhost(port.load(Ordering::SeqCst))).unwrap();
    client.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ping");
    assert_eq!(shards.join().unwrap(), vec![true, true]);
}

/// Reads `length` bytes and writes them back; returns whether TCP_NODELAY was set.
async fn echo_once(mut stream: monoio::net::TcpStream, length: usize) -> bool {
    let (result, buffer) = stream.read_exact(vec![0u8; length]).await;
    result.unwrap();
    let (result, _) = stream.write_all(buffer).await;
    result.unwrap();
    stream.nodelay().unwrap()
}
