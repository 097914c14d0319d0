//! `Bytes` and `BytesWriter` are first-class: they travel as results, as
//! arguments, as sequence items, inside structs and enums, in both
//! directions, on multi-thread and current-thread runtimes.
//!
//! Most tests run on tokio's paused clock. There, "settled" means every task
//! is idle (every message delivered and handled), so counts are exact. Every
//! wait is bounded, and so is every loop. The `Depot` interface, the byte
//! pattern and the pairs of ends are in `rpc_tests::bytes_lab`.

use rpc_core::{Bytes, BytesWriter, Sequence};
use rpc_tests::bytes_lab::*;
use rpc_tests::stream_support::*;
use rpc_tests::Via;

// ----- 1. first-class: every position, both directions ----------------------------

/// Streams and writers the depot hands out: direct results, struct and enum results.
async fn ends_as_results(via: Via) {
    let (depot, probe, _conns) = depot(via).await;
    // A byte stream as the direct result: returned at once.
    let mut download = depot.download(1, 50_000);
    assert_pattern(
        &format!("{via:?}: download"),
        &within("download", read_to_end(&mut download)).await.unwrap(),
        1,
        50_000,
    );

    // In a struct result.
    let Blob { name, mut data } = within("blob", depot.blob("b".into(), 2, 40_000)).await.expect("blob");
    assert_eq!(name, "b", "{via:?}");
    assert_pattern(&format!("{via:?}: blob"), &within("blob data", read_to_end(&mut data)).await.unwrap(), 2, 40_000);

    // A writer in a struct result: the depot reads what we write.
    let Slot { name, mut into } = within("slot", depot.slot("s".into())).await.expect("slot");
    assert_eq!(name, "s", "{via:?}");
    within("write", write_pattern(&mut into, 3, 30_000)).await.expect("write");
    within("close", into.close(None)).await.expect("close");
    wait_until("slot received", || probe.received("s").is_some()).await;
    assert_pattern(&format!("{via:?}: slot"), &probe.received("s").unwrap().expect("slot read"), 3, 30_000);

    // In enum results.
    match within("parcel", depot.parcel(1, 4, 20_000)).await.expect("parcel") {
        Parcel::Data(mut data) => {
            let got = within("parcel data", read_to_end(&mut data)).await.unwrap();
            assert_pattern(&format!("{via:?}: Data"), &got, 4, 20_000);
        }
        other => panic!("{via:?}: expected Data, got {other:?}"),
    }
    match within("parcel", depot.parcel(2, 5, 10_000)).await.expect("parcel") {
        Parcel::Named { name, mut data } => {
            assert_eq!(name, "named 5", "{via:?}");
            let got = within("parcel data", read_to_end(&mut data)).await.unwrap();
            assert_pattern(&format!("{via:?}: Named"), &got, 5, 10_000);
        }
        other => panic!("{via:?}: expected Named, got {other:?}"),
    }
    match within("parcel", depot.parcel(3, 0, 0)).await.expect("parcel") {
        Parcel::Into(mut into) => {
            within("write", write_pattern(&mut into, 6, 12_345)).await.expect("write");
            within("close", into.close(None)).await.expect("close");
            wait_until("into received", || probe.received("into").is_some()).await;
            assert_pattern(&format!("{via:?}: Into"), &probe.received("into").unwrap().expect("into read"), 6, 12_345);
        }
        other => panic!("{via:?}: expected Into, got {other:?}"),
    }
    assert!(matches!(within("parcel", depot.parcel(0, 0, 0)).await.expect("parcel"), Parcel::Empty), "{via:?}");
}

/// Streams and writers we hand to the depot: direct arguments, struct and enum arguments.
async fn ends_as_arguments(via: Via) {
    let (depot, _probe, _conns) = depot(via).await;
    // A byte stream argument: the depot reads what we write.
    let (mut writer, data) = Bytes::channel();
    let uploaded = depot.upload(data);
    within("write", write_pattern(&mut writer, 11, 60_000)).await.expect("write");
    within("close", writer.close(None)).await.expect("close");
    assert_pattern(&format!("{via:?}: upload"), &within("upload", uploaded).await.expect("upload"), 11, 60_000);

    // A writer argument: the depot writes, we read.
    let (into, mut data) = Bytes::channel();
    let filled = depot.fill(12, 45_000, into);
    assert_pattern(&format!("{via:?}: fill"), &within("fill data", read_to_end(&mut data)).await.unwrap(), 12, 45_000);
    within("fill", filled).await.expect("fill");

    // In a struct argument, both ends.
    let blob = Blob { name: "mine".into(), data: pattern_stream(13, 33_333) };
    let (name, got) = within("read_blob", depot.read_blob(blob)).await.expect("read_blob");
    assert_eq!(name, "mine", "{via:?}");
    assert_pattern(&format!("{via:?}: read_blob"), &got, 13, 33_333);
    let (into, mut data) = Bytes::channel();
    let filled = depot.fill_slot(14, 22_222, Slot { name: "box".into(), into });
    let got = within("slot data", read_to_end(&mut data)).await.unwrap();
    assert_pattern(&format!("{via:?}: fill_slot"), &got, 14, 22_222);
    assert_eq!(within("fill_slot", filled).await.expect("fill_slot"), "box", "{via:?}");

    // In enum arguments, every variant.
    let (what, got) = within("open_parcel", depot.open_parcel(0, 0, Parcel::Data(pattern_stream(15, 11_111))))
        .await
        .expect("open_parcel");
    assert_eq!(what, "data", "{via:?}");
    assert_pattern(&format!("{via:?}: Data argument"), &got, 15, 11_111);
    let named = Parcel::Named { name: "n".into(), data: pattern_stream(16, 9_999) };
    let (what, got) = within("open_parcel", depot.open_parcel(0, 0, named)).await.expect("open_parcel");
    assert_eq!(what, "n", "{via:?}");
    assert_pattern(&format!("{via:?}: Named argument"), &got, 16, 9_999);
    let (into, mut data) = Bytes::channel();
    let opened = depot.open_parcel(17, 8_888, Parcel::Into(into));
    let got = within("into data", read_to_end(&mut data)).await.unwrap();
    assert_pattern(&format!("{via:?}: Into argument"), &got, 17, 8_888);
    assert_eq!(within("open_parcel", opened).await.expect("open_parcel"), ("into".to_string(), Vec::new()));
    let empty = within("open_parcel", depot.open_parcel(0, 0, Parcel::Empty)).await.expect("open_parcel");
    assert_eq!(empty, ("empty".to_string(), Vec::new()), "{via:?}");
}

/// `Sequence<Bytes>` and `Sequence<BytesWriter>`, returned and uploaded.
async fn ends_as_sequence_items(via: Via) {
    let (depot, probe, _conns) = depot(via).await;
    // Returned: three streams, each with its own window; read the last first,
    // the others wait on their own windows without holding it up.
    let specs = vec![(21, 5_000), (22, 30_000), (23, 12_000)];
    let mut outer = depot.streams(specs.clone());
    let mut inners = Vec::new();
    while let Some(inner) = within("outer read", outer.read()).await.expect("outer read") {
        inners.push(inner);
        assert!(inners.len() <= 3, "{via:?}: too many streams");
    }
    assert_eq!(inners.len(), 3, "{via:?}");
    for (i, inner) in inners.iter().enumerate() {
        assert_eq!(inner.window_size(), (i as u32 + 1) * 1000, "{via:?}: stream {i} keeps its window");
    }
    for (i, inner) in inners.iter_mut().enumerate().rev() {
        let got = within("inner read", read_to_end(inner)).await.unwrap_or_else(|e| panic!("{via:?}: {e}"));
        assert_pattern(&format!("{via:?}: stream {i}"), &got, specs[i].0, specs[i].1);
    }

    // Uploaded: three streams with windows of 2,000, each written in full
    // before the depot reads any; it reads the last first.
    let (mut outer, streams) = Sequence::<Bytes>::channel();
    let read = depot.read_streams(streams);
    let mut writers = Vec::new();
    for _ in 0..3 {
        let (writer, inner) = Bytes::channel();
        inner.set_window(2_000);
        outer.write(inner).expect("outer write");
        writers.push(writer);
    }
    within("outer close", outer.close(None)).await.expect("outer close");
    let writes = writers.into_iter().enumerate().map(|(i, mut writer)| async move {
        write_pattern(&mut writer, 30 + i as u64, 10_000 * (i as u64 + 1)).await?;
        writer.close(None).await
    });
    let (written, read) = within("read_streams", futures::future::join(futures::future::join_all(writes), read)).await;
    assert!(written.iter().all(Result::is_ok), "{via:?}: {written:?}");
    let read = read.expect("read_streams");
    assert_eq!(read.len(), 3, "{via:?}");
    for (i, got) in read.iter().enumerate() {
        assert_pattern(&format!("{via:?}: uploaded stream {i}"), got, 30 + i as u64, 10_000 * (i as u64 + 1));
    }

    // Writers as items, returned: we write into each, the depot reads.
    let mut writers = depot.writers(3);
    let mut held = Vec::new();
    while let Some(writer) = within("writers read", writers.read()).await.expect("writers read") {
        held.push(writer);
        assert!(held.len() <= 3, "{via:?}: too many writers");
    }
    assert_eq!(held.len(), 3, "{via:?}");
    for (i, mut writer) in held.into_iter().enumerate().rev() {
        within("write", write_pattern(&mut writer, 40 + i as u64, 7_000)).await.expect("write");
        within("close", writer.close(None)).await.expect("close");
    }
    for i in 0..3u64 {
        let name = format!("writer {i}");
        wait_until("writer received", || probe.received(&name).is_some()).await;
        assert_pattern(&format!("{via:?}: {name}"), &probe.received(&name).unwrap().expect("read"), 40 + i, 7_000);
    }

    // Writers as items, uploaded: the depot writes into each, we read.
    let (mut outer, sent) = Sequence::<BytesWriter>::channel();
    let filled = depot.fill_writers(50, 6_000, sent);
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (writer, reader) = Bytes::channel();
        outer.write(writer).expect("outer write");
        readers.push(reader);
    }
    within("outer close", outer.close(None)).await.expect("outer close");
    for (i, reader) in readers.iter_mut().enumerate() {
        let got = within("read", read_to_end(reader)).await.expect("read");
        assert_pattern(&format!("{via:?}: filled writer {i}"), &got, 50 + i as u64, 6_000);
    }
    assert_eq!(within("fill_writers", filled).await.expect("fill_writers"), 3, "{via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_writers_travel_as_results() {
    for via in Via::BOTH {
        ends_as_results(via).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_writers_travel_as_arguments() {
    for via in Via::BOTH {
        ends_as_arguments(via).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_writers_travel_as_sequence_items() {
    for via in Via::BOTH {
        ends_as_sequence_items(via).await;
    }
}

#[tokio::test(start_paused = true)]
async fn streams_and_writers_travel_everywhere_on_a_current_thread_runtime() {
    for via in Via::BOTH {
        ends_as_results(via).await;
        ends_as_arguments(via).await;
        ends_as_sequence_items(via).await;
    }
}
