//! `raylet object put|get|delete` through a local raylet socket; `delete` frees the
//! object on every alive node (the raylet fans it out, see `services::objects::free`).

use super::args::ObjectCommand;
use crate::client::LocalClient;
use crate::ids::ObjectId;
use crate::local::codec::StoreError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket given, else the newest local cluster's (once `session_latest` is the caller's).
fn socket(given: &Option<PathBuf>, temp_dir: &Path) -> Result<PathBuf, String> {
    match given {
        Some(p) => Ok(p.clone()),
        None => Ok(super::session::trusted_latest(temp_dir)?.join("sockets").join("raylet")),
    }
}

fn connect(path: &Path) -> Result<LocalClient, String> {
    LocalClient::connect_driver(path).map_err(|e| format!("cannot use the raylet at {}: {e}", path.display()))
}

/// Runs the command.
pub fn run(cmd: &ObjectCommand) -> Result<(), String> {
    match cmd {
        ObjectCommand::Put { file, socket: s, temp_dir } => {
            let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut c = connect(&socket(s, temp_dir)?)?;
            let id = c.put(&data).map_err(|e| format!("put failed: {e}"))?;
            println!("{id}");
            c.disconnect().map_err(|e| e.to_string())
        }
        ObjectCommand::Get { id, socket: s, output, timeout_ms, temp_dir } => {
            let id = ObjectId::from_hex(id).map_err(|e| e.to_string())?;
            let mut c = connect(&socket(s, temp_dir)?)?;
            let began = std::time::Instant::now();
            let views = c
                .get_or_why(&[id], Some(Duration::from_millis(*timeout_ms)))
                .map_err(|e| format!("get failed: {e}"))?;
            let got = views.into_iter().next().unwrap_or(Err(String::new()));
            let v = match got {
                Ok(v) => v,
                // The node said why it gave up (no copy for the fetch timeout, or the object
                // can never fit there).
                Err(why) if !why.is_empty() => {
                    let waited = began.elapsed().as_millis();
                    return Err(format!(
                        "object {id} is not available: the node gave up fetching it after {waited} ms: {why}"
                    ));
                }
                Err(_) => {
                    // The node gives up before the timeout when its pull failed (no copy left
                    // anywhere for the fetch timeout); say which of the two happened.
                    let waited = began.elapsed();
                    let why = if waited < Duration::from_millis(*timeout_ms) {
                        format!(
                            "the node gave up fetching it after {} ms (no copy it could pull from)",
                            waited.as_millis()
                        )
                    } else {
                        format!("no copy appeared on any node within {timeout_ms} ms")
                    };
                    return Err(format!("object {id} is not available: {why}"));
                }
            };
            match output {
                Some(path) => std::fs::write(path, &v[..]).map_err(|e| format!("{}: {e}", path.display()))?,
                None => std::io::stdout().lock().write_all(&v).map_err(|e| e.to_string())?,
            }
            drop(v);
            c.disconnect().map_err(|e| e.to_string())
        }
        ObjectCommand::Delete { id, socket: s, temp_dir } => {
            let id = ObjectId::from_hex(id).map_err(|e| e.to_string())?;
            let mut c = connect(&socket(s, temp_dir)?)?;
            let r = c.free(&[id]).map_err(|e| format!("delete failed: {e}"))?;
            c.disconnect().map_err(|e| e.to_string())?;
            // The nodes that answered have freed their copies; those that could not be
            // reached keep theirs, which does not fail the delete.
            for f in &r.peer_failures {
                eprintln!("object {id} may remain on a node that could not be reached: {f}");
            }
            match r.errors.first() {
                Some(StoreError::Ok) => Ok(()),
                Some(StoreError::ObjectInUse) => {
                    eprintln!("object {id} is in use; it will be deleted when released");
                    Ok(())
                }
                Some(e) => Err(format!("delete of {id}: {e:?}")),
                None => Err("empty delete reply".into()),
            }
        }
    }
}
