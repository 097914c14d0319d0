//! A session store in Redis: each log is a Redis Stream (`<prefix><key>:log`,
//! entry ids `<id>-0`, one field holding the postcard-encoded entry) beside a
//! hash of positions (`<prefix><key>:meta`: last, acked, ended, cancelled).
//! Every change (append, including the end and abort's discard; ack,
//! including the removal of a delivered log; cancel) is one Lua script, so
//! concurrent server processes see each log change atomically. Reads of the
//! positions are one `HMGET`; `discard` and `remove` are one `DEL`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::store::{bound_reason, store_error, Entry, LogRead, LogState, SessionStore, StoreFuture};
use crate::RpcError;

/// KEYS: log, meta. ARGV: ttl in ms (0: none), ends ('1': the last entry
/// ends the log), discard ('1': drop every entry first, for abort), then
/// `id, bytes` pairs. Every id is checked before anything is written (Redis
/// does not roll a script back), and `ended` is set in the same change.
const APPEND: &str = r"
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
if last == nil then return 'malformed' end
if redis.call('HGET', KEYS[2], 'ended') == '1' then return 'ended' end
local n = (#ARGV - 3) / 2
for i = 0, n - 1 do
  if tonumber(ARGV[4 + 2 * i]) ~= last + 1 + i then
    return 'gap ' .. ARGV[4 + 2 * i] .. ' ' .. tostring(last + 1 + i)
  end
end
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
for i = 0, n - 1 do
  redis.call('XADD', KEYS[1], ARGV[4 + 2 * i] .. '-0', 'e', ARGV[5 + 2 * i])
end
redis.call('HSET', KEYS[2], 'last', last + n)
if redis.call('HGET', KEYS[2], 'acked') == false then redis.call('HSET', KEYS[2], 'acked', 0) end
if ARGV[2] == '1' then redis.call('HSET', KEYS[2], 'ended', '1') end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 'ok'
";

const READ: &str = r"
local last = redis.call('HGET', KEYS[2], 'last')
if not last then return {'0'} end
local first_kept = tostring(tonumber(last) + 1)
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head > 0 then first_kept = string.match(head[1][1], '^(%d+)') end
local out = {'1', first_kept}
local rows = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
for _, row in ipairs(rows) do
  table.insert(out, string.match(row[1], '^(%d+)'))
  table.insert(out, row[2][2])
end
return out
";

/// KEYS: log, meta. ARGV: upto, ttl in ms (0: none). Removes the log once
/// its end is acknowledged.
const ACK: &str = r"
local last = redis.call('HGET', KEYS[2], 'last')
if not last then return 0 end
local acked = tonumber(redis.call('HGET', KEYS[2], 'acked') or '0')
local upto = math.min(tonumber(ARGV[1]), tonumber(last))
if upto > acked then
  redis.call('HSET', KEYS[2], 'acked', upto)
  redis.call('XTRIM', KEYS[1], 'MINID', tostring(upto + 1) .. '-0')
end
if redis.call('HGET', KEYS[2], 'ended') == '1' and upto >= tonumber(last) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
";

/// KEYS: meta. ARGV: reason. Records a cancel only on a log that exists.
const CANCEL: &str = r"
if redis.call('HEXISTS', KEYS[1], 'last') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancelled', ARGV[1])
return 1
";

/// A [`SessionStore`] in Redis: every server process pointed at the same
/// Redis serves the same sessions, so a client can resume on another
/// process after the first one died.
///
/// Commands time out (1 s to connect, 2 s per reply), so a Redis that is
/// down fails operations with a `session store:` error instead of hanging;
/// the connection is re-established on the next operation.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use rpc_core::resume::{RedisStore, SessionStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// let store: Arc<dyn SessionStore> = Arc::new(RedisStore::connect("redis://127.0.0.1:6379", "feed:").await?);
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    poll: Duration,
    ttl: Option<Duration>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    append: Script,
    read: Script,
    ack: Script,
    cancel: Script,
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port`); every key this
    /// store writes starts with `prefix`.
    ///
    /// # Errors
    ///
    /// A `session store:` error if Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RpcError> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let connection = client.get_connection_manager_with_config(config).await.map_err(store_error)?;
        let scripts = Scripts {
            append: Script::new(APPEND),
            read: Script::new(READ),
            ack: Script::new(ACK),
            cancel: Script::new(CANCEL),
        };
        Ok(RedisStore {
            connection,
            prefix: prefix.into(),
            poll: Duration::from_millis(10),
            ttl: None,
            scripts: Arc::new(scripts),
        })
    }

    /// How often a waiter looks at Redis again when nothing changed (default 10 ms).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Lets Redis drop a session idle (no append, no acknowledgement) for
    /// `ttl`: abandoned sessions do not stay forever. A consumer that comes
    /// back later gets a [`ResumeGap`](super::ResumeGap) error.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The time to live in milliseconds as the scripts take it (0: none).
    fn ttl_millis(&self) -> u64 {
        self.ttl.map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    fn keys(&self, key: &str) -> (String, String) {
        (format!("{}{key}:log", self.prefix), format!("{}{key}:meta", self.prefix))
    }

    /// Appends `entries` in one script; with `discard`, drops every
    /// entry held first (abort).
    async fn append_entries(&self, key: &str, entries: Vec<(u64, Entry)>, discard: bool) -> Result<(), RpcError> {
        if entries.is_empty() {
            return Ok(());
        }
        if entries.iter().rev().skip(1).any(|(_, entry)| entry.is_end()) {
            return Err(RpcError::protocol(format!("resumable sequence '{key}' has ended; nothing may follow")));
        }
        let ends = entries.last().is_some_and(|(_, entry)| entry.is_end());
        let (log, meta) = self.keys(key);
        let mut invocation = self.scripts.append.key(&log);
        invocation.key(&meta).arg(self.ttl_millis()).arg(if ends { "1" } else { "0" }).arg(if discard {
            "1"
        } else {
            "0"
        });
        for (id, entry) in &entries {
            let bytes = postcard::to_allocvec(entry).map_err(|e| RpcError::serialization(e.to_string()))?;
            invocation.arg(*id).arg(bytes);
        }
        let mut connection = self.connection.clone();
        let outcome: String = invocation.invoke_async(&mut connection).await.map_err(store_error)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "ended" => Err(RpcError::protocol(format!("resumable sequence '{key}' has ended; nothing may follow"))),
            "malformed" => Err(store_error(format!("malformed position for '{key}' in Redis"))),
            gap => {
                let mut words = gap.split(' ').skip(1);
                let (id, expected) = (words.next().unwrap_or("?"), words.next().unwrap_or("?"));
                Err(RpcError::protocol(format!(
                    "resumable sequence '{key}': id {id} appended where {expected} was due"
                )))
            }
        }
    }

    async fn read_entries(&self, key: &str, after: u64, max: usize) -> Result<Option<LogRead>, RpcError> {
        let (log, meta) = self.keys(key);
        let mut connection = self.connection.clone();
        let rows: Vec<Vec<u8>> = self
            .scripts
            .read
            .key(&log)
            .key(&meta)
            .arg(after.saturating_add(1))
            .arg(max)
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        if rows.first().map(Vec::as_slice) != Some(b"1") {
            return Ok(None);
        }
        let number = |bytes: &[u8]| -> Result<u64, RpcError> {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| store_error("malformed id in Redis"))
        };
        let first_kept = number(rows.get(1).map(Vec::as_slice).unwrap_or_default())?;
        let mut entries = Vec::with_capacity(rows.len().saturating_sub(2) / 2);
        for pair in rows.get(2..).unwrap_or_default().chunks_exact(2) {
            let entry = postcard::from_bytes(&pair[1]).map_err(|e| store_error(format!("malformed entry: {e}")))?;
            entries.push((number(&pair[0])?, entry));
        }
        Ok(Some(LogRead { entries, first_kept }))
    }

    async fn read_state(&self, key: &str) -> Result<Option<LogState>, RpcError> {
        let (_, meta) = self.keys(key);
        let mut connection = self.connection.clone();
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&meta)
            .arg(&["last", "acked", "ended", "cancelled"])
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let field = |i: usize| fields.get(i).cloned().flatten();
        let (last, cancelled) = (field(0), field(3));
        if last.is_none() && cancelled.is_none() {
            return Ok(None);
        }
        let parse = |value: Option<String>| -> Result<u64, RpcError> {
            match value {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| store_error(format!("malformed position {v:?} for '{key}' in Redis"))),
            }
        };
        let ended = match field(2).as_deref() {
            None => false,
            Some("1") => true,
            Some(other) => return Err(store_error(format!("malformed end flag {other:?} for '{key}' in Redis"))),
        };
        Ok(Some(LogState { last: parse(last)?, acked: parse(field(1))?, cancelled, ended }))
    }
}

impl SessionStore for RedisStore {
    fn append<'a>(&'a self, key: &'a str, entries: Vec<(u64, Entry)>) -> StoreFuture<'a, ()> {
        Box::pin(self.append_entries(key, entries, false))
    }

    fn abort<'a>(&'a self, key: &'a str, id: u64) -> StoreFuture<'a, ()> {
        Box::pin(self.append_entries(key, vec![(id, Entry::Aborted)], true))
    }

    fn read_after<'a>(&'a self, key: &'a str, after: u64, max: usize) -> StoreFuture<'a, Option<LogRead>> {
        Box::pin(self.read_entries(key, after, max))
    }

    fn ack<'a>(&'a self, key: &'a str, upto: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (log, meta) = self.keys(key);
            let mut connection = self.connection.clone();
            let _: i64 = self
                .scripts
                .ack
                .key(&log)
                .key(&meta)
                .arg(upto)
                .arg(self.ttl_millis())
                .invoke_async(&mut connection)
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }

    fn state<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<LogState>> {
        Box::pin(self.read_state(key))
    }

    fn cancel<'a>(&'a self, key: &'a str, reason: String) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (_, meta) = self.keys(key);
            let mut connection = self.connection.clone();
            let reason = bound_reason(reason);
            let _: i64 =
                self.scripts.cancel.key(&meta).arg(reason).invoke_async(&mut connection).await.map_err(store_error)?;
            Ok(())
        })
    }

    fn discard<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (log, _) = self.keys(key);
            let mut connection = self.connection.clone();
            let _: i64 = connection.del(&log).await.map_err(store_error)?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (log, meta) = self.keys(key);
            let mut connection = self.connection.clone();
            let _: i64 = connection.del(&[&log, &meta]).await.map_err(store_error)?;
            Ok(())
        })
    }

    fn changed<'a>(
        &'a self,
        _key: &'a str,
        timeout: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(tokio::time::sleep(timeout.min(self.poll)))
    }
}
