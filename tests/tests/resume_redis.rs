//! Resumption against a real Redis (started by the test on a free loopback
//! port, no persistence): a server process killed mid-stream, Redis itself
//! restarting, two server processes with clients moving between them.
//! Needs `redis-server`: `scripts/install-redis.sh` installs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc_core::resume::{
    Backoff, Dialer, Reconnecting, RedisStore, ResumableSequence, ResumableWriter, ResumeGap, ResumeOptions,
    ResumeProxy, ResumeServer,
};
use rpc_core::{Config, Connection};
use rpc_tests::resume_support::{ChildGuard, RedisServer, Relay};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(90);

/// Starts `resume-server` (a separate process) against `url`.
fn server_process(url: &str, prefix: &str) -> (ChildGuard, SocketAddr) {
    let child = Command::new(env!("CARGO_BIN_EXE_resume-server"))
        .args(["127.0.0.1:0", url, prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start resume-server");
    let mut guard = ChildGuard::new(child);
    let stdout = guard.stdout().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read the server's address");
    let addr = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected output {line:?}"));
    (guard, addr.parse().unwrap())
}

/// A dialer that goes round the servers in `targets`, as a TCP load balancer would.
fn balancer(targets: Arc<Mutex<Vec<SocketAddr>>>) -> Dialer {
    let turn = Arc::new(AtomicUsize::new(0));
    Arc::new(move || {
        let targets = targets.lock().unwrap().clone();
        let addr = targets[turn.fetch_add(1, Ordering::Relaxed) % targets.len()];
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Connection::builder().config(Config::default()).open(stream).await
        })
    })
}

fn quick() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(200),
        max_attempts: Some(100),
        jitter: true,
    }
}

async fn produce(store: RedisStore, key: String, count: u32) {
    let mut writer = ResumableWriter::<u32>::open(Arc::new(store), key, 256).await.unwrap();
    for n in 1..=count {
        writer.write(&n).unwrap();
        if n % 50 == 0 {
            writer.flush().await.unwrap();
        }
    }
    writer.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_a_new_server_process_after_the_first_is_killed() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "kill:").await.unwrap();
    let (mut first, first_addr) = server_process(&redis.url(), "kill:");
    let targets = Arc::new(Mutex::new(vec![first_addr]));
    let link = Reconnecting::<ResumeProxy>::with_dialer(balancer(targets.clone()), quick());
    let producer = tokio::spawn(produce(store, "feed".into(), 3000));

    let options = ResumeOptions { capacity: 32, batch: 16, ack_every: 16, ..ResumeOptions::default() };
    let mut feed = ResumableSequence::<u32>::new(&link, "feed", ResumeProxy::clone).with_options(options);
    let mut expected = 1;
    let mut second = None;
    let mut killed_at: Option<Instant> = None;
    tokio::time::timeout(LIMIT, async {
        while let Some(n) = feed.read().await.unwrap() {
            assert_eq!(n, expected, "no gap, no duplicate");
            expected += 1;
            if feed.reconnects() > 0 {
                if let Some(at) = killed_at.take() {
                    println!("first item from the second process {:?} after the kill", at.elapsed());
                }
            }
            if n == 1000 {
                first.kill();
                killed_at = Some(Instant::now());
                let (guard, addr) = server_process(&redis.url(), "kill:");
                *targets.lock().unwrap() = vec![addr];
                second = Some(guard);
            }
        }
    })
    .await
    .expect("finished in time");
    assert_eq!(expected, 3001);
    assert!(feed.reconnects() >= 1);
    assert!(second.is_some());
    producer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_fails_clearly_when_redis_restarts_empty() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "restart:").await.unwrap();
    let served = store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start(listener.local_addr().unwrap()).await;
    tokio::spawn(rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(Arc::new(served.clone())))));

    let mut writer = ResumableWriter::<u32>::open(Arc::new(store), "feed", 256).await.unwrap();
    for n in 1..=100 {
        writer.write(&n).unwrap();
    }
    writer.flush().await.unwrap();
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    let options = ResumeOptions { capacity: 8, batch: 4, ..ResumeOptions::default() };
    let mut feed = ResumableSequence::<u32>::new(&link, "feed", ResumeProxy::clone).with_options(options);
    for n in 1..=50 {
        assert_eq!(feed.read().await.unwrap(), Some(n));
    }
    redis.restart();
    relay.cut();
    let err = tokio::time::timeout(LIMIT, async {
        loop {
            match feed.read().await {
                Ok(Some(_)) => continue, // items that had already arrived
                Ok(None) => panic!("the sequence cannot end normally: its log is gone"),
                Err(err) => return err,
            }
        }
    })
    .await
    .expect("an error, not a hang");
    println!("reader: {err}");
    let gap = ResumeGap::from_error(&err);
    assert!(
        gap.as_ref().is_some_and(|gap| gap.first_kept.is_none()) || err.message().starts_with("session store:"),
        "{err}"
    );
    let err = tokio::time::timeout(LIMIT, writer.send(&101)).await.expect("no hang").unwrap_err();
    println!("writer: {err}");
    assert!(err.message().contains("lost the log") || err.message().starts_with("session store:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_two_server_processes_share_sessions_as_clients_move() {
    const CLIENTS: usize = 8;
    const ITEMS: u32 = 600;
    let redis = RedisServer::start();
    let (_a, a) = server_process(&redis.url(), "two:");
    let (_b, b) = server_process(&redis.url(), "two:");
    let store = RedisStore::connect(&redis.url(), "two:").await.unwrap();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let key = format!("session-{client}");
        tokio::spawn(produce(store.clone(), key.clone(), ITEMS));
        let link = Reconnecting::<ResumeProxy>::with_dialer(balancer(Arc::new(Mutex::new(vec![a, b]))), quick());
        tasks.push(tokio::spawn(async move {
            let options = ResumeOptions { capacity: 16, batch: 8, ack_every: 8, ..ResumeOptions::default() };
            let mut feed = ResumableSequence::<u32>::new(&link, key, ResumeProxy::clone).with_options(options);
            let mut expected = 1;
            let mut highest = 0;
            while let Some(n) = feed.read().await.unwrap() {
                assert_eq!(n, expected);
                expected += 1;
                if n % 100 == 0 && n < ITEMS {
                    // Move: the next dial goes to the other process.
                    if let rpc_core::resume::LinkState::Connected { generation } = link.state() {
                        highest = highest.max(generation);
                    }
                    if let Some(connection) = link.connection() {
                        connection.close();
                    }
                }
            }
            assert_eq!(expected, ITEMS + 1);
            highest
        }));
    }
    let generations =
        tokio::time::timeout(LIMIT, futures::future::try_join_all(tasks)).await.expect("in time").unwrap();
    for generation in generations {
        assert!(generation >= 3, "the client moved between the processes ({generation} connections)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_through_redis_across_100_drops_over_10000_items() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "drops:").await.unwrap();
    let served = store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start(listener.local_addr().unwrap()).await;
    tokio::spawn(rpc_core::serve(listener, move || ResumeProxy::new(ResumeServer::new(Arc::new(served.clone())))));
    let producer = tokio::spawn(produce(store, "feed".into(), 10_000));
    let link = Reconnecting::<ResumeProxy>::tcp(relay.addr(), quick());
    let options = ResumeOptions { capacity: 32, batch: 16, ack_every: 16, ..ResumeOptions::default() };
    let mut feed = ResumableSequence::<u32>::new(&link, "feed", ResumeProxy::clone).with_options(options);
    let started = Instant::now();
    let mut expected = 1;
    tokio::time::timeout(LIMIT, async {
        while let Some(n) = feed.read().await.unwrap() {
            assert_eq!(n, expected, "every item exactly once, in order");
            expected += 1;
            if n % 100 == 50 {
                relay.cut();
            }
        }
    })
    .await
    .expect("finished in time");
    assert_eq!(expected, 10_001);
    // 100 cuts; a cut lands a moment after its abort, so two may rarely merge into one loss.
    assert!(feed.reconnects() >= 90, "{} reconnects", feed.reconnects());
    let elapsed = started.elapsed();
    println!(
        "Redis store: 10000 items across {} drops in {elapsed:?}: {:.0} items/s",
        feed.reconnects(),
        10_000.0 / elapsed.as_secs_f64()
    );
    producer.await.unwrap();
}

#[tokio::test]
async fn resume_redis_store_trims_on_ack_and_expires_idle_sessions() {
    use rpc_core::resume::{Entry, SessionStore};
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "store:").await.unwrap();
    let items = (1..=5u8).map(|n| (u64::from(n), Entry::Item(vec![n]))).collect();
    store.append("k", items).await.unwrap();
    let err = store.append("k", vec![(9, Entry::Item(vec![9]))]).await.unwrap_err();
    assert!(err.message().contains("id 9 appended where 6 was due"), "{err}");
    store.ack("k", 3).await.unwrap();
    store.ack("k", 2).await.unwrap(); // never backwards
    let state = store.state("k").await.unwrap().unwrap();
    assert_eq!((state.last, state.acked, state.ended), (5, 3, false));
    let read = store.read_after("k", 0, 10).await.unwrap().unwrap();
    assert_eq!(read.first_kept, 4, "acknowledged entries are trimmed");
    assert_eq!(read.entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [4, 5]);
    store.append("k", vec![(6, Entry::Closed(None))]).await.unwrap();
    assert!(store.state("k").await.unwrap().unwrap().ended);
    assert!(store.append("k", vec![(7, Entry::Item(vec![]))]).await.unwrap_err().message().contains("has ended"));

    let expiring = store.clone().with_ttl(Duration::from_millis(200));
    expiring.append("idle", vec![(1, Entry::Item(vec![1]))]).await.unwrap();
    assert!(expiring.state("idle").await.unwrap().is_some());
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if expiring.state("idle").await.unwrap().is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "an idle session expires");
    assert!(expiring.read_after("idle", 1, 10).await.unwrap().is_none());
}

/// Runs one `redis-cli` command against `url`; its output.
fn redis_cli(url: &str, args: &[&str]) -> String {
    let output = Command::new("redis-cli").arg("-u").arg(url).args(args).output().expect("run redis-cli");
    assert!(output.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The Redis keys under `prefix`.
fn keys_under(url: &str, prefix: &str) -> Vec<String> {
    redis_cli(url, &["--raw", "KEYS", &format!("{prefix}*")])
        .lines()
        .map(str::to_owned)
        .filter(|k| !k.is_empty())
        .collect()
}

#[tokio::test]
async fn resume_redis_store_appends_all_or_nothing() {
    use rpc_core::resume::{Entry, SessionStore};
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "atomic:").await.unwrap();
    store.append("k", vec![(1, Entry::Item(vec![1])), (2, Entry::Item(vec![2]))]).await.unwrap();
    let err = store.append("k", vec![(3, Entry::Item(vec![3])), (5, Entry::Item(vec![5]))]).await.unwrap_err();
    assert!(err.message().contains("id 5 appended where 4 was due"), "{err}");
    assert_eq!(store.state("k").await.unwrap().unwrap().last, 2, "a gap writes nothing");
    let read = store.read_after("k", 0, 10).await.unwrap().unwrap();
    assert_eq!(read.entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test]
async fn resume_redis_store_ends_the_log_in_the_appending_script() {
    use rpc_core::resume::{Entry, SessionStore};
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "atomic:").await.unwrap();
    store.append("k", vec![(1, Entry::Item(vec![1])), (2, Entry::Item(vec![2]))]).await.unwrap();
    redis_cli(&redis.url(), &["CONFIG", "RESETSTAT"]);
    store.append("k", vec![(3, Entry::Item(vec![3])), (4, Entry::Closed(None))]).await.unwrap();
    let stats = redis_cli(&redis.url(), &["INFO", "commandstats"]);
    // Commands a script runs count too; the scripts themselves are the eval lines.
    let scripts: Vec<&str> = stats.lines().filter(|line| line.starts_with("cmdstat_eval")).collect();
    assert!(
        scripts.len() == 1 && scripts[0].starts_with("cmdstat_evalsha:calls=1,"),
        "an ending append is one script call: {scripts:?}"
    );
    let state = store.state("k").await.unwrap().unwrap();
    assert_eq!((state.last, state.ended), (4, true));
}

#[tokio::test]
async fn resume_redis_store_keeps_no_key_a_peer_invents_and_removes_delivered_logs() {
    use rpc_core::resume::{Entry, SessionStore, MAX_CANCEL_REASON};
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "bound:").await.unwrap();
    for n in 0..1000u32 {
        store.cancel(&format!("invented-{}", n.wrapping_mul(2_654_435_761)), "x".repeat(100)).await.unwrap();
    }
    assert!(keys_under(&redis.url(), "bound:").is_empty(), "cancels on unknown keys create nothing");
    store.append("live", vec![(1, Entry::Item(vec![1]))]).await.unwrap();
    store.cancel("live", "x".repeat(10_000)).await.unwrap();
    let reason = store.state("live").await.unwrap().unwrap().cancelled.unwrap();
    assert_eq!(reason.len(), MAX_CANCEL_REASON);

    store.append("done", vec![(1, Entry::Item(vec![1])), (2, Entry::Aborted)]).await.unwrap();
    store.ack("done", 2).await.unwrap();
    assert!(store.state("done").await.unwrap().is_none(), "a log whose end is acknowledged is gone");
    assert!(keys_under(&redis.url(), "bound:done").is_empty());
}

#[tokio::test]
async fn resume_redis_store_reports_a_malformed_position() {
    use rpc_core::resume::{Entry, SessionStore};
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "bad:").await.unwrap();
    store.append("k", vec![(1, Entry::Item(vec![1]))]).await.unwrap();
    redis_cli(&redis.url(), &["HSET", "bad:k:meta", "acked", "not a number"]);
    let err = store.state("k").await.unwrap_err();
    assert!(err.message().starts_with("session store:"), "{err}");
}

#[tokio::test]
async fn resume_redis_store_aborts_in_one_script() {
    use rpc_core::resume::{Entry, SessionStore};
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), "abort:").await.unwrap();
    store.append("k", vec![(1, Entry::Item(vec![1])), (2, Entry::Item(vec![2]))]).await.unwrap();
    redis_cli(&redis.url(), &["CONFIG", "RESETSTAT"]);
    store.abort("k", 3).await.unwrap();
    let stats = redis_cli(&redis.url(), &["INFO", "commandstats"]);
    let scripts: Vec<&str> = stats.lines().filter(|line| line.starts_with("cmdstat_eval")).collect();
    assert!(scripts.len() == 1 && scripts[0].starts_with("cmdstat_evalsha:calls=1,"), "{scripts:?}");
    assert!(stats.contains("cmdstat_del:calls=1,"), "only the script's own discard: {stats}");
    let read = store.read_after("k", 0, 10).await.unwrap().unwrap();
    assert_eq!((read.entries, read.first_kept), (vec![(3, Entry::Aborted)], 3));
    assert!(store.state("k").await.unwrap().unwrap().ended);
}
