//! The Redis backend (Ray's choice): `redis://[USER:PASSWORD@]HOST:PORT[/NAMESPACE]`.
//! Driven only by the writer thread after [`RedisStore::open`], over one synchronous
//! connection with [`super::WriterOptions::io_timeout`] on connect, reads and writes.
//!
//! Layout: each table is one Redis hash, `raylet:<namespace>:<table>`, whose fields are
//! the record keys; the namespace (default `default`) lets several clusters share one
//! Redis. A batch is one `MULTI`/`EXEC` of `HSET`/`HDEL` (a clear is `DEL` of the hashes),
//! and is acknowledged once `EXEC` replied: Redis has applied it. Redis's own persistence
//! (RDB, AOF) is the operator's business; when Redis comes back empty the writer sees it
//! (a dropped connection, or the probe finding no format version) and writes its whole
//! mirror back with [`Backend::restore`].

use super::meta::FORMAT_VERSION_KEY;
use super::records::{Op, Table, Tables};
use super::writer::{Backend, BackendError};
use super::OpenError;
use std::time::Duration;

/// Fields per `HSET` when a whole table is written back.
const RESTORE_CHUNK: usize = 512;

/// Where a Redis store is: parsed from `redis://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// What the client connects to: `redis://[USER:PASSWORD@]HOST:PORT`.
    url: String,
    /// `HOST:PORT` (no credentials), for messages.
    pub addr: String,
    /// The key prefix's namespace.
    pub namespace: String,
}

impl RedisTarget {
    /// Parses `redis://[USER:PASSWORD@]HOST[:PORT][/NAMESPACE]`. The path is our namespace,
    /// not a Redis database number.
    pub fn parse(value: &str) -> Result<Self, String> {
        let rest = value.strip_prefix("redis://").ok_or("must start with redis://")?;
        let (authority, namespace) = match rest.split_once('/') {
            Some((a, ns)) => (a, ns),
            None => (rest, ""),
        };
        let addr = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if addr.is_empty() {
            return Err("no host".into());
        }
        let namespace = if namespace.is_empty() { "default" } else { namespace };
        if namespace.len() > 128
            || !namespace.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!("namespace {namespace:?}: use at most 128 of A-Z a-z 0-9 _ - ."));
        }
        let url = format!("redis://{authority}");
        redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        Ok(Self { url, addr: addr.to_string(), namespace: namespace.to_string() })
    }

    /// The hash holding `table`.
    pub fn key(&self, table: Table) -> String {
        format!("raylet:{}:{}", self.namespace, table.name())
    }

    fn location(&self) -> String {
        format!("redis://{}/{}", self.addr, self.namespace)
    }
}

/// A Redis store: a client and, while it works, one connection.
pub struct RedisStore {
    client: redis::Client,
    conn: Option<redis::Connection>,
    target: RedisTarget,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("target", &self.target.location()).finish()
    }
}

impl RedisStore {
    /// Connects and loads every table. Blocks for at most a few `timeout`s.
    pub fn open(target: &RedisTarget, timeout: Duration) -> Result<(Self, Tables), OpenError> {
        let unreachable =
            |e: redis::RedisError| OpenError::Unreachable { location: target.location(), reason: e.to_string() };
        let client = redis::Client::open(target.url.as_str()).map_err(unreachable)?;
        let mut store = Self { client, conn: None, target: target.clone(), timeout };
        let mut tables = Tables::default();
        let conn =
            store.conn().map_err(|e| OpenError::Unreachable { location: target.location(), reason: e.to_string() })?;
        for t in Table::ALL {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(target.key(t)).query(conn).map_err(|e| {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    unreachable(e)
                } else {
                    OpenError::Corrupt { location: target.location(), reason: format!("{}: {e}", target.key(t)) }
                }
            })?;
            for (k, v) in pairs {
                tables.insert(t, k, v);
            }
        }
        Ok((store, tables))
    }

    /// The connection, opened if there is none.
    fn conn(&mut self) -> Result<&mut redis::Connection, BackendError> {
        if self.conn.is_none() {
            let c = self.client.get_connection_with_timeout(self.timeout).map_err(lost)?;
            c.set_read_timeout(Some(self.timeout)).map_err(lost)?;
            c.set_write_timeout(Some(self.timeout)).map_err(lost)?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Runs `pipe` as one transaction; a transport error drops the connection.
    fn exec(&mut self, pipe: &redis::Pipeline) -> Result<(), BackendError> {
        let r = pipe.exec(self.conn()?);
        r.map_err(|e| self.failed(e))
    }

    fn failed(&mut self, e: redis::RedisError) -> BackendError {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() {
            self.conn = None;
            lost(e)
        } else {
            BackendError::Failed(format!("redis: {e}"))
        }
    }
}

fn lost(e: redis::RedisError) -> BackendError {
    BackendError::Unreachable(e.to_string())
}

impl Backend for RedisStore {
    fn location(&self) -> String {
        self.target.location()
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    pipe.cmd("HSET").arg(self.target.key(*table)).arg(key.as_slice()).arg(value.as_slice()).ignore();
                }
                Op::Delete { table, key } => {
                    pipe.cmd("HDEL").arg(self.target.key(*table)).arg(key.as_slice()).ignore();
                }
                Op::ClearAll => {
                    let keys: Vec<String> = Table::ALL.iter().map(|t| self.target.key(*t)).collect();
                    pipe.cmd("DEL").arg(keys).ignore();
                }
            }
        }
        self.exec(&pipe)
    }

    fn restore(&mut self, all: &Tables) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let keys: Vec<String> = Table::ALL.iter().map(|t| self.target.key(*t)).collect();
        pipe.cmd("DEL").arg(&keys).ignore();
        for (t, key) in Table::ALL.iter().zip(&keys) {
            let records: Vec<_> = all.table(*t).iter().collect();
            for chunk in records.chunks(RESTORE_CHUNK) {
                let c = pipe.cmd("HSET").arg(key);
                for (k, v) in chunk {
                    c.arg(k.as_slice()).arg(v.as_slice());
                }
                c.ignore();
            }
        }
        self.exec(&pipe)
    }

    fn probe(&mut self) -> Result<bool, BackendError> {
        let key = self.target.key(Table::Meta);
        let r = redis::cmd("HEXISTS").arg(key).arg(FORMAT_VERSION_KEY).query::<bool>(self.conn()?);
        r.map_err(|e| self.failed(e))
    }
}

/// Deletes every table of the namespace (when no GCS runs).
pub fn destroy(target: &RedisTarget, timeout: Duration) -> Result<(), OpenError> {
    let unreachable = |e: String| OpenError::Unreachable { location: target.location(), reason: e };
    let client = redis::Client::open(target.url.as_str()).map_err(|e| unreachable(e.to_string()))?;
    let mut store = RedisStore { client, conn: None, target: target.clone(), timeout };
    store.apply(&[Op::ClearAll]).map_err(|e| unreachable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_and_namespace_and_bad_ones_are_refused() {
        let t = RedisTarget::parse("redis://127.0.0.1:6400/cluster-a").unwrap();
        assert_eq!((t.addr.as_str(), t.namespace.as_str()), ("127.0.0.1:6400", "cluster-a"));
        assert_eq!(t.key(Table::PlacementGroups), "raylet:cluster-a:placement_groups");
        let d = RedisTarget::parse("redis://localhost:7000").unwrap();
        assert_eq!(d.namespace, "default");
        let auth = RedisTarget::parse("redis://:secret@10.0.0.1:6379/x").unwrap();
        assert_eq!(auth.addr, "10.0.0.1:6379");
        assert!(!auth.location().contains("secret"));
        for bad in ["http://x:1", "redis://", "redis:///ns", "redis://h:1/a/b", "redis://h:1/a b", "redis://h:notaport"]
        {
            assert!(RedisTarget::parse(bad).is_err(), "{bad} must be refused");
        }
    }
}
