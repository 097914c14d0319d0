//! The physical floor: hand-written tokio code on TCP loopback.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};

use crate::common::*;
use crate::rt::{listener, tokio_listener, ServerThread};

pub struct Raw {
    echo: Mutex<TcpStream>,
    pipelined: Mutex<TcpStream>,
    stream_addr: std::net::SocketAddr,
    bulk_addr: std::net::SocketAddr,
}

/// The classic echo (one read and one write per message, both ends) with 64
/// requests in flight: not a floor (every framework that coalesces beats it),
/// shown for reference.
pub struct RawPerMessage {
    pipelined: Mutex<TcpStream>,
}

/// The classic echo: reads exactly one 64-byte request, writes it back.
async fn echo_server(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        stream.set_nodelay(true).ok();
        tokio::task::spawn_local(async move {
            let mut buf = [0u8; PAYLOAD];
            while stream.read_exact(&mut buf).await.is_ok() {
                if stream.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A batching echo: reads whatever has arrived, writes every whole 64-byte
/// record back in one write.
async fn batched_echo_server(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        stream.set_nodelay(true).ok();
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 64 << 10];
            let mut pending = 0;
            loop {
                let n = match stream.read(&mut buf[pending..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending += n;
                let whole = pending / PAYLOAD * PAYLOAD;
                if stream.write_all(&buf[..whole]).await.is_err() {
                    return;
                }
                buf.copy_within(whole..pending, 0);
                pending -= whole;
            }
        });
    }
}

/// Per connection: reads a count, then writes that many postcard items, each
/// behind a one-byte length, through a 64 KiB buffered writer.
async fn stream_server(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        stream.set_nodelay(true).ok();
        tokio::task::spawn_local(async move {
            let Ok(count) = stream.read_u64().await else { return };
            let mut out = BufWriter::with_capacity(64 << 10, stream);
            let mut buf = [0u8; 32];
            for i in 0..count {
                let used = postcard::to_slice(&small(i), &mut buf[1..]).unwrap().len();
                buf[0] = used as u8;
                if out.write_all(&buf[..used + 1]).await.is_err() {
                    return;
                }
            }
            let _ = out.flush().await;
        });
    }
}

const CHUNK: usize = 256 << 10;

/// Per connection: reads a byte count, then writes that many bytes in 256 KiB writes.
async fn bulk_server(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::task::spawn_local(async move {
            let Ok(bytes) = stream.read_u64().await else { return };
            let chunk = vec![0x5au8; CHUNK];
            let mut sent = 0;
            while sent < bytes {
                let n = (CHUNK as u64).min(bytes - sent) as usize;
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                sent += n as u64;
            }
        });
    }
}

impl Raw {
    pub async fn setup(server: &ServerThread) -> Res<Raw> {
        let (echo_l, echo_addr) = listener();
        let (batched_l, batched_addr) = listener();
        let (stream_l, stream_addr) = listener();
        let (bulk_l, bulk_addr) = listener();
        server.spawn(move || echo_server(tokio_listener(echo_l)));
        server.spawn(move || batched_echo_server(tokio_listener(batched_l)));
        server.spawn(move || stream_server(tokio_listener(stream_l)));
        server.spawn(move || bulk_server(tokio_listener(bulk_l)));
        let echo = TcpStream::connect(echo_addr).await?;
        echo.set_nodelay(true)?;
        let pipelined = TcpStream::connect(batched_addr).await?;
        pipelined.set_nodelay(true)?;
        Ok(Raw { echo: Mutex::new(echo), pipelined: Mutex::new(pipelined), stream_addr, bulk_addr })
    }
}

impl RawPerMessage {
    pub async fn setup(server: &ServerThread) -> Res<RawPerMessage> {
        let (l, addr) = listener();
        server.spawn(move || echo_server(tokio_listener(l)));
        let pipelined = TcpStream::connect(addr).await?;
        pipelined.set_nodelay(true)?;
        Ok(RawPerMessage { pipelined: Mutex::new(pipelined) })
    }
}

impl Contender for RawPerMessage {
    fn name(&self) -> &'static str {
        "raw(per-message)"
    }

    /// The classic echo with 64 requests in flight: one write per request,
    /// one read per reply (the server likewise).
    fn inflight(&self, calls: usize) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let mut stream = self.pipelined.lock().await;
            let (mut rd, mut wr) = stream.split();
            let window = Semaphore::new(IN_FLIGHT);
            let start = Instant::now();
            let writer = async {
                let request = [7u8; PAYLOAD];
                for _ in 0..calls {
                    window.acquire().await?.forget();
                    wr.write_all(&request).await?;
                }
                Ok::<_, BoxError>(())
            };
            let reader = async {
                let mut reply = [0u8; PAYLOAD];
                for _ in 0..calls {
                    rd.read_exact(&mut reply).await?;
                    window.add_permits(1);
                }
                Ok(())
            };
            tokio::try_join!(writer, reader)?;
            Ok(start.elapsed())
        }))
    }
}

impl Contender for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn unary(&self, calls: usize) -> Option<Fut<'_, Vec<Duration>>> {
        Some(Box::pin(async move {
            let mut stream = self.echo.lock().await;
            let request = [7u8; PAYLOAD];
            let mut reply = [0u8; PAYLOAD];
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let start = Instant::now();
                stream.write_all(&request).await?;
                stream.read_exact(&mut reply).await?;
                samples.push(start.elapsed());
            }
            Ok(samples)
        }))
    }

    /// Both ends batching: as many requests per write as the window allows,
    /// as many replies per write as have arrived. The floor.
    fn inflight(&self, calls: usize) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let mut stream = self.pipelined.lock().await;
            let (mut rd, mut wr) = stream.split();
            let window = Semaphore::new(IN_FLIGHT);
            let start = Instant::now();
            let writer = async {
                let requests = vec![7u8; PAYLOAD * IN_FLIGHT];
                let mut sent = 0;
                while sent < calls {
                    window.acquire().await?.forget();
                    let mut k = 1;
                    while sent + k < calls {
                        match window.try_acquire() {
                            Ok(permit) => {
                                permit.forget();
                                k += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    wr.write_all(&requests[..k * PAYLOAD]).await?;
                    sent += k;
                }
                Ok::<_, BoxError>(())
            };
            let reader = async {
                let mut buf = vec![0u8; 64 << 10];
                let total = calls * PAYLOAD;
                let mut got = 0;
                while got < total {
                    let n = rd.read(&mut buf).await?;
                    if n == 0 {
                        return Err(err("raw echo closed"));
                    }
                    let replies = (got + n) / PAYLOAD - got / PAYLOAD;
                    got += n;
                    window.add_permits(replies);
                }
                Ok(())
            };
            tokio::try_join!(writer, reader)?;
            Ok(start.elapsed())
        }))
    }

    fn stream(&self, count: u64) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let mut stream = TcpStream::connect(self.stream_addr).await?;
            stream.set_nodelay(true)?;
            let start = Instant::now();
            stream.write_u64(count).await?;
            let mut input = BufReader::with_capacity(64 << 10, stream);
            let mut buf = [0u8; 32];
            for i in 0..count {
                let len = input.read_u8().await? as usize;
                input.read_exact(&mut buf[..len]).await?;
                let item: Small = postcard::from_bytes(&buf[..len])?;
                debug_assert_eq!(item, small(i));
                std::hint::black_box(item);
            }
            Ok(start.elapsed())
        }))
    }

    fn bulk(&self, bytes: u64) -> Option<Fut<'_, Duration>> {
        Some(Box::pin(async move {
            let mut stream = TcpStream::connect(self.bulk_addr).await?;
            let start = Instant::now();
            stream.write_u64(bytes).await?;
            let mut buf = vec![0u8; 64 << 10];
            let mut got = 0;
            while got < bytes {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(err("raw bulk closed early"));
                }
                got += n as u64;
            }
            Ok(start.elapsed())
        }))
    }
}
