//! Records the seed corpora from real sessions, and writes the
//! reproducers of the bugs found so far (fuzz/regressions/).
//!
//! ```text
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --example record_seeds
//! ```
//!
//! A real client (`rpc_core::Connection`) talks to the fuzzed server over an
//! in-memory pipe through a relay, on a current-thread runtime with a paused
//! clock. The relay records what the client writes after its Hello; that is
//! exactly the `connection` target's input. It also rewrites the two Hellos'
//! nonces so the server numbers its streams odd and the client even, as
//! they are numbered when the harness (nonce 0) replays the bytes.
//!
//! Writes fuzz/corpus/{connection,frame,payload}/<name> and
//! fuzz/regressions/<name>.bin, then replays every connection seed through
//! the harness and prints what the server did.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rpc_core::fuzzing::payload_bytes;
use rpc_core::{Bytes, Connection, Sequence};
use rpc_fuzz::harness::{client_config, client_hello, frame_of, run_connection, CLIENT_NONCE};
use rpc_fuzz::service::{method, AppError, ChildProxy, FuzzedProxy, Kid, Server, FUZZED};
use rpc_fuzz::values::{sample_record, CapItem, Item, Record, Shape, Tree, WithCaps};
use rpc_tests::wire_mirror::{CapDesc, Msg, Target, WireHello, WireWindow};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type Recorded = Arc<Mutex<Vec<u8>>>;

/// Reads one length-prefixed frame body.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(prefix) as usize];
    r.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Forwards `from` to `to`: the Hello with its nonce replaced by `nonce`,
/// then every byte as it is, recorded in `log`.
async fn relay<R, W>(mut from: R, mut to: W, nonce: u64, log: Recorded)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(body) = read_frame(&mut from).await else { return };
    let mut hello: WireHello = postcard::from_bytes(&body).expect("a Hello");
    hello.nonce = nonce;
    let body = postcard::to_stdvec(&hello).unwrap();
    let mut framed = (body.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&body);
    if to.write_all(&framed).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                log.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Runs `body` as a real client of the fuzzed server; returns what the client
/// and the server wrote after their Hellos.
fn record<F, Fut>(body: F) -> (Vec<u8>, Vec<u8>)
where
    F: FnOnce(FuzzedProxy) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let (client_io, relay_client) = tokio::io::duplex(64 << 10);
        let (relay_server, server_io) = tokio::io::duplex(64 << 10);
        let from_client: Recorded = Arc::default();
        let from_server: Recorded = Arc::default();
        let (crd, cwr) = tokio::io::split(relay_client);
        let (srd, swr) = tokio::io::split(relay_server);
        // The server sees nonce 0 from the client (it numbers streams odd);
        // the client sees the largest nonce from the server (it numbers even).
        let c2s = tokio::spawn(relay(crd, swr, CLIENT_NONCE, from_client.clone()));
        let s2c = tokio::spawn(relay(srd, cwr, u64::MAX, from_server.clone()));
        let server = tokio::spawn(async move {
            let builder =
                Connection::builder().config(rpc_fuzz::harness::server_config()).bootstrap(FuzzedProxy::new(Server));
            if let Ok(connection) = builder.open(server_io).await {
                connection.closed().await;
            }
        });
        let session = async {
            let connection =
                Connection::builder().config(client_config()).open(client_io).await.map_err(|e| e.to_string())?;
            let fuzzed: FuzzedProxy = connection.bootstrap();
            let result = body(fuzzed).await;
            // Let the last releases and finishes go out; the connection then closes as idle.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(connection);
            result
        };
        match tokio::time::timeout(Duration::from_secs(60), session).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("session failed: {e}"),
            Err(_) => panic!("session timed out"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let _ = c2s.await;
            let _ = s2c.await;
            let _ = server.await;
        })
        .await;
        let c = from_client.lock().unwrap().clone();
        let s = from_server.lock().unwrap().clone();
        (c, s)
    })
}

fn e<T: std::fmt::Debug>(err: T) -> String {
    format!("{err:?}")
}

async fn unary(f: FuzzedProxy) -> Result<(), String> {
    assert_eq!(f.add(20, 3).await.map_err(e)?, 23);
    let record = sample_record(5);
    assert_eq!(f.echo(record.clone()).await.map_err(e)?, record);
    assert_eq!(f.check(4).await, Ok(2));
    assert!(matches!(f.check(3).await, Err(AppError::Refused(_))));
    // Pipelined: several calls before the first await.
    let a = f.add(1, 2);
    let b = f.echo(sample_record(1));
    let c = f.add(-5, 5);
    assert_eq!((a.await.map_err(e)?, c.await.map_err(e)?), (3, 0));
    b.await.map_err(e)?;
    Ok(())
}

async fn capabilities(f: FuzzedProxy) -> Result<(), String> {
    let child = f.child("kid".into());
    // Pipelined on the unresolved answer, two levels deep.
    let sibling = child.sibling();
    let p1 = child.ping();
    let p2 = sibling.ping();
    let name = sibling.name();
    assert_eq!((p1.await.map_err(e)?, p2.await.map_err(e)?), (7, 8));
    assert_eq!(name.await.map_err(e)?, "kid'");
    // A capability passed back to its owner, and one of ours the server calls.
    assert_eq!(f.call_back(child.clone()).await.map_err(e)?, 7 + 3);
    let ours = ChildProxy::new(Kid { name: "client".into(), generation: 2 });
    assert_eq!(f.call_back(ours.clone()).await.map_err(e)?, 9 + 6);
    drop((child, sibling, ours));
    Ok(())
}

async fn sequences(f: FuzzedProxy) -> Result<(), String> {
    // Returned sequence, small window so windows go back and forth.
    let numbers = f.numbers(20);
    numbers.set_capacity(4);
    numbers.set_batch_size(2);
    let all: Vec<u64> = numbers.map(|r| r.unwrap()).collect().await;
    assert_eq!(all.len(), 20);
    // Upload.
    let (mut w, r) = Sequence::channel();
    let sum = f.sum(r);
    for i in 0..10u64 {
        w.write(i).map_err(e)?;
    }
    w.close(None).await.map_err(e)?;
    assert_eq!(sum.await.map_err(e)?, 45);
    // The server fills our writer.
    let (w, mut r) = Sequence::<Item>::channel();
    r.set_capacity(3);
    let fill = f.fill(7, w);
    let mut n = 0;
    while r.read().await.map_err(e)?.is_some() {
        n += 1;
    }
    assert_eq!(n, 7);
    fill.await.map_err(e)?;
    // Nested sequences.
    let (mut outer_w, outer_r) = Sequence::<Sequence<u32>>::channel();
    let nested = f.nested(outer_r);
    for k in 0..2u32 {
        let (mut w, r) = Sequence::channel();
        outer_w.write(r).map_err(e)?;
        w.write(k).map_err(e)?;
        w.write(10).map_err(e)?;
        w.close(None).await.map_err(e)?;
    }
    outer_w.close(None).await.map_err(e)?;
    assert_eq!(nested.await.map_err(e)?, 21);
    Ok(())
}

async fn cap_items(f: FuzzedProxy) -> Result<(), String> {
    let (mut w, r) = Sequence::<CapItem>::channel();
    let seen = f.items(r);
    w.write(CapItem::Plain(Item::Text("x".into()))).map_err(e)?;
    w.write(CapItem::Child(ChildProxy::new(Kid { name: "c".into(), generation: 0 }))).map_err(e)?;
    let (mut iw, ir) = Sequence::channel();
    w.write(CapItem::Stream { name: "s".into(), items: ir }).map_err(e)?;
    iw.write(Item::Number(1)).map_err(e)?;
    iw.write(Item::Pair { key: "k".into(), value: None }).map_err(e)?;
    iw.close(None).await.map_err(e)?;
    let (mut bw, br) = Bytes::channel();
    w.write(CapItem::Both(Box::new(CapItem::Raw(br)), Some(Box::new(CapItem::Plain(Item::Number(9)))))).map_err(e)?;
    bw.write(bytes::Bytes::from_static(b"hello")).map_err(e)?;
    bw.close(None).await.map_err(e)?;
    w.close(None).await.map_err(e)?;
    assert_eq!(seen.await.map_err(e)?, 1 + 7 + 2 + 5 + 1);
    Ok(())
}

async fn byte_streams(f: FuzzedProxy) -> Result<(), String> {
    let mut blob = f.blob(10_000);
    blob.set_window(4096);
    let mut got = Vec::new();
    blob.read_to_end(&mut got).await.map_err(e)?;
    assert_eq!(got.len(), 10_000);
    let (mut w, r) = Bytes::channel();
    let up = f.upload(r);
    w.write_all(&[7u8; 3000]).await.map_err(e)?;
    w.shutdown().await.map_err(e)?;
    assert_eq!(up.await.map_err(e)?, 3000);
    let (w, mut r) = Bytes::channel();
    r.set_window(1024);
    let fill = f.fill_bytes(2500, w);
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.map_err(e)?;
    assert_eq!(got.len(), 2500);
    fill.await.map_err(e)?;
    Ok(())
}

async fn cancel(f: FuzzedProxy) -> Result<(), String> {
    // A call dropped while the server runs it: a Finish.
    let slow = f.slow(10_000);
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(slow);
    // A sequence cancelled after one item.
    let mut numbers = f.numbers(200);
    numbers.set_capacity(8);
    numbers.read().await.map_err(e)?;
    numbers.cancel(Some("enough".into()));
    // A byte stream dropped unread.
    drop(f.blob(50_000));
    // An upload aborted half way.
    let (mut w, r) = Sequence::channel();
    let sum = f.sum(r);
    w.write(1u64).map_err(e)?;
    w.flush().await.map_err(e)?;
    w.abort();
    assert!(sum.await.is_err());
    // A slow call that finishes.
    assert_eq!(f.slow(5).await.map_err(e)?, 5);
    Ok(())
}

async fn everything(f: FuzzedProxy) -> Result<(), String> {
    // Many things in flight at once on one connection.
    let child = f.child("all".into());
    let ping = child.sibling().sibling().ping();
    let numbers = f.numbers(5);
    let (mut w, r) = Sequence::channel();
    let sum = f.sum(r);
    let add = f.add(i64::MAX, 1);
    let blob = f.blob(300);
    w.write(u64::MAX).map_err(e)?;
    w.write(2).map_err(e)?;
    w.close(None).await.map_err(e)?;
    let all: Vec<u64> = numbers.map(|r| r.unwrap()).collect().await;
    let mut data = Vec::new();
    let mut blob = blob;
    blob.read_to_end(&mut data).await.map_err(e)?;
    assert_eq!((all.len(), data.len()), (5, 300));
    assert_eq!(ping.await.map_err(e)?, 9);
    assert_eq!(sum.await.map_err(e)?, 1);
    assert_eq!(add.await.map_err(e)?, i64::MIN);
    Ok(())
}

/// The freeze of issue 10 (fixed): after a `Call` that passes a
/// `SequenceWriter` (the server produces that stream), a `StreamData` for
/// the same stream carrying a capability descriptor. `handle_stream_data`
/// returned its protocol error without deferring the drop of the capability
/// it had just imported; its Drop locked the connection state again.
fn stream_data_to_own_producer(cap: CapDesc) -> Vec<u8> {
    const STREAM: u32 = 2;
    // A window of one item and 100 items to fill: the stream is still open
    // (the server waits for window) when the StreamData arrives.
    let window = WireWindow { capacity: 1, batch: 1 };
    let call = Msg::Call {
        question: 0,
        target: Target::Export(0),
        interface: FUZZED,
        method: method::FILL,
        caps: vec![CapDesc::SequenceWriter { stream: STREAM, window }],
    };
    let mut bytes = frame_of(&call, &postcard::to_stdvec(&(100u32, 0u32)).unwrap());
    let data = Msg::StreamData { stream: STREAM, count: 0, item_caps: vec![], caps: vec![cap], item_lens: vec![] };
    bytes.extend(frame_of(&data, &[]));
    bytes
}

/// Found by the fuzzer (freeze): a StreamData for stream 4, which nobody
/// has opened, carrying a `SequenceWriter` for stream 4 itself.
fn stream_data_carrying_a_writer_for_itself() -> Vec<u8> {
    let cap = CapDesc::SequenceWriter { stream: 4, window: WireWindow { capacity: 2, batch: 1 } };
    frame_of(&Msg::StreamData { stream: 4, count: 0, item_caps: vec![], caps: vec![cap], item_lens: vec![] }, &[])
}

/// Found by the fuzzer (leak): a StreamData for stream 2, which nobody has
/// opened, whose one item holds a `SequenceReader` for stream 2 itself.
fn stream_data_carrying_its_own_reader() -> Vec<u8> {
    let cap = CapDesc::SequenceReader { stream: 2, window: WireWindow { capacity: 2, batch: 1 } };
    frame_of(&Msg::StreamData { stream: 2, count: 1, item_caps: vec![1], caps: vec![cap], item_lens: vec![1] }, &[0])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    println!("{:>6} bytes  {}", bytes.len(), dir.join(name).display());
}

fn main() {
    let fuzz = Path::new(rpc_fuzz::FUZZ_DIR);
    let corpus = fuzz.join("corpus");
    let sessions: Vec<(&str, (Vec<u8>, Vec<u8>))> = vec![
        ("unary", record(unary)),
        ("capabilities", record(capabilities)),
        ("sequences", record(sequences)),
        ("cap_items", record(cap_items)),
        ("byte_streams", record(byte_streams)),
        ("cancel", record(cancel)),
        ("everything", record(everything)),
    ];
    for (name, (client, server)) in &sessions {
        write(&corpus.join("connection"), name, client);
        // The frame decoder sees both directions, Hellos included; selector
        // byte first (64-byte reads, the roomy limit, normal depth).
        let mut c = vec![0x3f];
        c.extend(client_hello());
        c.extend(client);
        write(&corpus.join("frame"), &format!("{name}_client"), &c);
        let mut s = vec![0x0f];
        s.extend(client_hello());
        s.extend(server.iter().take(4096));
        write(&corpus.join("frame"), &format!("{name}_server"), &s);
    }

    // Payload seeds: kind byte, item-caps byte, postcard bytes (see fuzz_targets/payload.rs).
    let payload = corpus.join("payload");
    let with = |kind: u8, pattern: u8, bytes: Vec<u8>| {
        let mut v = vec![kind, pattern];
        v.extend(bytes);
        v
    };
    let record_bytes = payload_bytes(&sample_record(3)).unwrap();
    write(&payload, "record", &with(0, 0, record_bytes.clone()));
    let shape = Shape::Many(vec![Shape::Maybe(Some(Box::new(Shape::Point(1, -1)))), Shape::Empty]);
    write(&payload, "shape", &with(1, 0, payload_bytes(&shape).unwrap()));
    let tree = Tree::Node(vec![Tree::Node(vec![Tree::Leaf(0)]), Tree::Leaf(9)]);
    write(&payload, "tree", &with(2, 0, payload_bytes(&tree).unwrap()));
    let items = vec![Item::Number(1), Item::Text("t".into()), Item::Pair { key: "k".into(), value: Some(vec![1, 2]) }];
    write(&payload, "items", &with(3, 0, payload_bytes(&items).unwrap()));
    write(&payload, "pair", &with(4, 0, payload_bytes(&(20i64, -3i64)).unwrap()));
    write(&payload, "string_option", &with(5, 0, payload_bytes(&("s".to_string(), Some(vec![3u32]))).unwrap()));
    // Values with capabilities: indexes 0.. of the table, as a sender writes them.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let kid = || ChildProxy::new(Kid { name: "k".into(), generation: 0 });
    let with_caps = WithCaps {
        child: kid(),
        numbers: Sequence::channel().1,
        sink: Sequence::channel().0,
        data: Bytes::channel().1,
        maybe: Some(kid()),
        many: vec![kid(), kid()],
        nested: Sequence::channel().1,
        upload: Bytes::channel().0,
        record: Record { name: "caps".into(), ..sample_record(0) },
    };
    write(&payload, "with_caps", &with(6, 0, payload_bytes(&with_caps).unwrap()));
    let item = CapItem::Both(
        Box::new(CapItem::Child(kid())),
        Some(Box::new(CapItem::Stream { name: "n".into(), items: Sequence::channel().1 })),
    );
    write(&payload, "cap_item", &with(7, 0, payload_bytes(&item).unwrap()));
    let list = vec![CapItem::Raw(Bytes::channel().1), CapItem::Plain(Item::Number(4))];
    write(&payload, "cap_items", &with(8, 0, payload_bytes(&list).unwrap()));
    write(
        &payload,
        "option_child_seq",
        &with(9, 0, payload_bytes(&(Some(kid()), Sequence::<Item>::channel().1)).unwrap()),
    );
    write(&payload, "writer_arg", &with(10, 0, payload_bytes(&(3u32, Sequence::<Item>::channel().0)).unwrap()));
    // Stream items: the lengths of all items but the last (one byte each),
    // then the items back to back. Three items taking 1, 0, 1 capabilities.
    let batch = |items: Vec<Vec<u8>>| {
        let mut v: Vec<u8> = items[..items.len() - 1].iter().map(|i| u8::try_from(i.len()).unwrap()).collect();
        v.extend(items.concat());
        v
    };
    let cap_items = vec![
        payload_bytes(&CapItem::Child(kid())).unwrap(),
        payload_bytes(&CapItem::Plain(Item::Number(2))).unwrap(),
        payload_bytes(&CapItem::Raw(Bytes::channel().1)).unwrap(),
    ];
    write(&payload, "batch_cap_items", &with(11, 0b0100_0101, batch(cap_items)));
    let seqs = vec![payload_bytes(&Sequence::<u32>::channel().1).unwrap(); 2];
    write(&payload, "batch_sequences", &with(12, 0b0010_0101, batch(seqs)));
    let plain = items.iter().map(|item| payload_bytes(item).unwrap()).collect();
    write(&payload, "batch_items", &with(13, 0b0100_0000, batch(plain)));
    drop(_guard);

    // Reproducers of bugs found (now fixed), in the current wire format.
    let regressions = fuzz.join("regressions");
    write(
        &regressions,
        "stream_data_to_own_producer_deadlock.bin",
        &stream_data_to_own_producer(CapDesc::SenderHosted(0)),
    );
    // The same with a stream end (a sequence the client would produce) instead of an object.
    let end = CapDesc::SequenceReader { stream: 4, window: WireWindow { capacity: 4, batch: 4 } };
    write(&regressions, "stream_data_to_own_producer_deadlock_stream_end.bin", &stream_data_to_own_producer(end));
    write(
        &regressions,
        "stream_data_carrying_a_writer_for_itself_deadlock.bin",
        &stream_data_carrying_a_writer_for_itself(),
    );
    write(&regressions, "stream_data_carrying_its_own_reader_leak.bin", &stream_data_carrying_its_own_reader());

    // Replay the connection seeds through the harness.
    for (name, (client, _)) in &sessions {
        let outcome = run_connection(client);
        println!("replayed {name}: {outcome:?}");
    }
}
