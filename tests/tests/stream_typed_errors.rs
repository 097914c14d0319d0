//! Typed errors around streams: a method returning `Result<Sequence<T>, E>`
//! or `Result<Bytes, E>` fails with `E` before any item, and a producer can
//! end a stream with an application error the consumer reads back as that
//! error. Each test runs against a local object and through a connection.

use rpc_core::{eventual, Bytes, CallError, ErrorKind, RpcError, Sequence};
use rpc_tests::Via;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FsError {
    NoSuchFile(String),
    Rpc(String),
}

impl From<RpcError> for FsError {
    fn from(err: RpcError) -> Self {
        FsError::Rpc(err.to_string())
    }
}

/// An error type with no framework variant, for the `CallError` form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Missing {
    NoSuchFile,
}

#[eventual]
pub trait Files {
    /// The lines of a file, or `NoSuchFile` before any line.
    async fn lines(&self, name: String) -> Result<Sequence<String>, FsError>;
    /// The bytes of a file, or `NoSuchFile` before any byte.
    async fn contents(&self, name: String) -> Result<Bytes, FsError>;
    /// As `lines`, with an error type that has no `Rpc` variant.
    fn lines_plain(&self, name: String) -> Result<Sequence<String>, Missing>;
    /// Two lines, then the stream ends with `NoSuchFile(next)`.
    fn broken_lines(&self, next: String) -> Sequence<String>;
    /// Some bytes, then the stream ends with `NoSuchFile(next)`.
    fn broken_bytes(&self, next: String) -> Bytes;
}

struct Disk;

const FILE: &str = "a.txt";

fn file_lines() -> Sequence<String> {
    let (mut writer, reader) = Sequence::channel();
    tokio::spawn(async move {
        for line in ["one", "two", "three"] {
            writer.write(line.to_string()).expect("write");
        }
        let _ = writer.close(None).await;
    });
    reader
}

impl Files for Disk {
    async fn lines(&self, name: String) -> Result<Sequence<String>, FsError> {
        if name != FILE {
            return Err(FsError::NoSuchFile(name));
        }
        Ok(file_lines())
    }

    async fn contents(&self, name: String) -> Result<Bytes, FsError> {
        if name != FILE {
            return Err(FsError::NoSuchFile(name));
        }
        let (mut writer, reader) = Bytes::channel();
        tokio::spawn(async move {
            writer.write(&b"hello bytes"[..]).expect("write");
            let _ = writer.close(None).await;
        });
        Ok(reader)
    }

    fn lines_plain(&self, name: String) -> Result<Sequence<String>, Missing> {
        if name != FILE {
            return Err(Missing::NoSuchFile);
        }
        Ok(file_lines())
    }

    fn broken_lines(&self, next: String) -> Sequence<String> {
        let (mut writer, reader) = Sequence::channel();
        tokio::spawn(async move {
            writer.write("first".to_string()).expect("write");
            writer.write("second".to_string()).expect("write");
            let _ = writer.close(Some(RpcError::application(&FsError::NoSuchFile(next)))).await;
        });
        reader
    }

    fn broken_bytes(&self, next: String) -> Bytes {
        let (mut writer, reader) = Bytes::channel();
        tokio::spawn(async move {
            writer.write(&b"partial"[..]).expect("write");
            let _ = writer.close(Some(RpcError::application(&FsError::NoSuchFile(next)))).await;
        });
        reader
    }
}

async fn read_all(mut lines: Sequence<String>) -> (Vec<String>, Option<RpcError>) {
    let mut got = Vec::new();
    for _ in 0..100 {
        match lines.read().await {
            Ok(Some(line)) => got.push(line),
            Ok(None) => return (got, None),
            Err(err) => return (got, Some(err)),
        }
    }
    panic!("more items than were written");
}

#[tokio::test]
async fn a_typed_error_comes_before_any_item_of_a_sequence() {
    for via in Via::BOTH {
        let (files, _conns) = via.reach(FilesProxy::new(Disk)).await;
        let err = files.lines("missing.txt".into()).await.unwrap_err();
        assert_eq!(err, FsError::NoSuchFile("missing.txt".into()), "{via:?}");
        let lines = files.lines(FILE.into()).await.expect("the file exists");
        assert_eq!(read_all(lines).await, (vec!["one".into(), "two".into(), "three".into()], None), "{via:?}");
    }
}

#[tokio::test]
async fn a_typed_error_comes_before_any_byte() {
    for via in Via::BOTH {
        let (files, _conns) = via.reach(FilesProxy::new(Disk)).await;
        let err = files.contents("missing.txt".into()).await.unwrap_err();
        assert_eq!(err, FsError::NoSuchFile("missing.txt".into()), "{via:?}");
        let mut bytes = files.contents(FILE.into()).await.expect("the file exists");
        let mut all = Vec::new();
        bytes.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"hello bytes", "{via:?}");
    }
}

#[tokio::test]
async fn a_sequence_result_works_with_an_error_type_without_a_framework_variant() {
    for via in Via::BOTH {
        let (files, _conns) = via.reach(FilesProxy::new(Disk)).await;
        let err = files.lines_plain("missing.txt".into()).split_errors().await.unwrap_err();
        assert_eq!(err, CallError::App(Missing::NoSuchFile), "{via:?}");
        let lines = files.lines_plain(FILE.into()).split_errors().await.expect("the file exists");
        assert_eq!(read_all(lines).await.0.len(), 3, "{via:?}");
    }
}

#[tokio::test]
async fn a_sequence_ended_with_an_application_error_is_read_as_that_error() {
    for via in Via::BOTH {
        let (files, _conns) = via.reach(FilesProxy::new(Disk)).await;
        let (items, end) = read_all(files.broken_lines("b.txt".into())).await;
        assert_eq!(items, vec!["first".to_string(), "second".to_string()], "{via:?}: items before the end");
        let end = end.expect("the stream ends with an error");
        assert_eq!(end.kind(), ErrorKind::Application, "{via:?}: {end}");
        assert_eq!(end.application_value::<FsError>(), Some(FsError::NoSuchFile("b.txt".into())), "{via:?}");
    }
}

#[tokio::test]
async fn a_byte_stream_ended_with_an_application_error_is_read_as_that_error() {
    for via in Via::BOTH {
        let (files, _conns) = via.reach(FilesProxy::new(Disk)).await;
        let mut bytes = files.broken_bytes("c.txt".into());
        let mut all = Vec::new();
        let err = bytes.read_to_end(&mut all).await.expect_err("the stream ends with an error");
        assert_eq!(all, b"partial", "{via:?}: bytes before the end");
        let err = err.into_inner().and_then(|inner| inner.downcast::<RpcError>().ok()).expect("an RpcError inside");
        assert_eq!(err.kind(), ErrorKind::Application, "{via:?}: {err}");
        assert_eq!(err.application_value::<FsError>(), Some(FsError::NoSuchFile("c.txt".into())), "{via:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_items_of_a_sequence_behind_a_result_follow_the_reply_at_once() {
    use rpc_core::Config;
    use std::time::Duration;
    const ONE_WAY: Duration = Duration::from_millis(50);
    let (a, b) = rpc_tests::latency_pipe(ONE_WAY);
    let (_server, _client, files) =
        rpc_tests::connect_pair(a, b, FilesProxy::new(Disk), Config::default()).await.expect("connect");
    let start = tokio::time::Instant::now();
    let mut lines = files.lines(FILE.into()).await.expect("the file exists");
    assert_eq!(start.elapsed(), ONE_WAY * 2, "the typed outcome costs one round trip");
    assert_eq!(lines.read().await, Ok(Some("one".to_string())));
    assert_eq!(start.elapsed(), ONE_WAY * 2, "the first item travels with the reply, no second round trip");
    let start = tokio::time::Instant::now();
    let err = files.lines("missing.txt".into()).await.unwrap_err();
    assert_eq!((err, start.elapsed()), (FsError::NoSuchFile("missing.txt".into()), ONE_WAY * 2));
}
