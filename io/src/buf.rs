//! Reading into the spare capacity of a `BytesMut`.
//!
//! monoio's `IoBufMut` for `BytesMut` writes at the start of the buffer (its `write_ptr` is
//! `as_mut_ptr`), so a plain `read(buf)` overwrites bytes already buffered: a packet that
//! arrives in two reads would be corrupted. [`read_append`] reads into `len..capacity` instead.

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

/// Reads once into the spare capacity of `buf`, appending to what it holds; returns the byte
/// count (0: end of stream, or no spare capacity: reserve before calling).
pub async fn read_append<R: AsyncReadRent>(
    reader: &mut R,
    buf: BytesMut,
) -> (std::io::Result<usize>, BytesMut) {
    let len = buf.len();
    let capacity = buf.capacity();
    let (result, slice) = reader.read(buf.slice_mut(len..capacity)).await;
    (result, slice.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::AsyncWriteRentExt;

    #[test]
    fn appends_across_reads() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let writer = monoio::spawn(async move {
                let mut stream = monoio::net::TcpStream::connect(addr)
                    .await
                    .expect("connect");
                for chunk in [&b"hel"[..], b"lo ", b"world"] {
                    let (r, _) = stream.write_all(chunk.to_vec()).await;
                    r.expect("write");
                    monoio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            });
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = BytesMut::with_capacity(64);
            while buf.len() < 11 {
                let (result, back) = read_append(&mut stream, buf).await;
                buf = back;
                assert!(result.expect("read") > 0);
            }
            assert_eq!(&buf[..], b"hello world");
            writer.await;
        });
    }
}
